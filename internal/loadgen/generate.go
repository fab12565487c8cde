package loadgen

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pedal-project/pedal/internal/clicks/clicktoken"
)

// Kind is what a generated click stands for; the ledger names it.
type Kind uint8

const (
	KindUnique    Kind = iota // a fresh, valid click
	KindDuplicate             // an earlier unique click sent again
	KindBot                   // a click with a bot's user agent
	KindBurst                 // one of many clicks from one IP on one ad in one minute
	KindLate                  // a click whose ts is 2 to 45 minutes old: counted
	KindTooLate               // a click whose ts is 80 to 90 minutes old: too late to count
	numKinds
)

var kindNames = [numKinds]string{"unique", "duplicate", "bot", "burst", "late", "too_late"}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// ParseKind returns the Kind named s, as written in a ledger.
func ParseKind(s string) (Kind, error) {
	for k, name := range kindNames {
		if s == name {
			return Kind(k), nil
		}
	}
	return 0, fmt.Errorf("unknown click kind %q", s)
}

const (
	historySize  = 4096 // recent unique clicks a duplicate may repeat
	burstMinSize = 12   // clicks in a burst group, at least
	burstMaxSize = 40
	campaignSize = 25 // ads per campaign: campaign_id is cmp-<ad/25>
	minuteMs     = 60_000
	maxUsers     = 100_000_000 // user ids are u-00000001 to u-99999999

	// Event-time ages of late clicks, well clear of the aggregator's late horizon
	// (a click older than the partition's largest event time − 30s − 1h is
	// too_late): see the package comment.
	lateMinMs    = 2 * minuteMs
	lateMaxMs    = 45 * minuteMs
	tooLateMinMs = 80 * minuteMs
	tooLateMaxMs = 90 * minuteMs
	// refMaxAgeMs is how recent an acknowledged click of an ad must be for the ad
	// to take a late click.
	refMaxAgeMs = 10 * minuteMs
	// maxRefAds bounds the ads tracked for acknowledged clicks (8 bytes each);
	// higher-numbered ads take no late clicks.
	maxRefAds = 1 << 20
)

// countryWeights are ISO 3166-1 alpha-2 codes with weights adding up to 100.
var countryWeights = [...]struct {
	code   string
	weight int
}{
	{"US", 29}, {"IN", 8}, {"GB", 7}, {"DE", 6}, {"BR", 6}, {"FR", 5}, {"JP", 5}, {"CA", 4},
	{"MX", 3}, {"ES", 3}, {"IT", 3}, {"AU", 3}, {"ID", 2}, {"KR", 2}, {"NL", 2}, {"PL", 2},
	{"TR", 2}, {"SE", 1}, {"CH", 1}, {"ZA", 1}, {"NG", 1}, {"AR", 1}, {"EG", 1}, {"VN", 1}, {"PH", 1},
}

// browserWeights are browser user agents with weights adding up to 100. None of
// them needs escaping in JSON.
var browserWeights = [...]struct {
	ua     string
	weight int
}{
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", 30},
	{"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36", 25},
	{"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", 20},
	{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15", 8},
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0", 6},
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51", 5},
	{"Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36", 4},
	{"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", 2},
}

// botAgents are user agents of crawlers and scripts, drawn uniformly.
var botAgents = [...]string{
	"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
	"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
	"curl/8.5.0",
	"python-requests/2.31.0",
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
	"Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
	"Wget/1.21.4",
}

// userAgent returns the user agent of index ua: browsers first, then bots.
func userAgent(ua uint8) string {
	if int(ua) < len(browserWeights) {
		return browserWeights[ua].ua
	}
	return botAgents[int(ua)-len(browserWeights)]
}

// publicOctets are first octets of IPv4 /8s allocated to RIRs for public use; the
// addresses are data only and never dialled. IPv6 addresses come from the
// documentation prefix 2001:db8::/32.
var publicOctets = [...]uint8{23, 31, 37, 46, 62, 77, 78, 81, 82, 86, 89, 91, 93, 95, 109, 151, 176, 178, 185, 188, 193, 195, 203, 212, 213, 217}

// burstOctets are the first octets of burst groups' IPv4 addresses, public /8s
// apart from publicOctets so that no other click shares a burst's address.
var burstOctets = [...]uint8{2, 5}

// burstIP returns the address of burst group n (from 1): distinct for 2^25
// groups, scattered by a multiplication by an odd number (a bijection mod 2^24).
func burstIP(n uint64) uint64 {
	n--
	return uint64(burstOctets[n&1])<<24 | (n>>1)*0x9e3779&0xffffff
}

// click is one generated click; the wire form and the ledger line are derived from
// it.
type click struct {
	seq     uint64 // click number in the run: click_id lg-<run>-<seq>
	group   uint64 // burst group, 0 when not a burst click
	ts      int64  // Unix milliseconds
	ip      uint64 // IPv4 in the low 32 bits, or the low 64 bits of a 2001:db8:: address
	ad      uint32
	user    uint32 // user_id u-<user as 8 digits>, none when 0
	ua      uint8  // see userAgent
	country uint8  // index into countryWeights
	v6      bool
	kind    Kind
	token   string // ModeRedirect only
}

// adRefs records, per ad, the largest event time among its acknowledged clicks
// (to a second), which is a lower bound of the largest event time the ad's log
// partition holds. Safe for concurrent use: the workers note, the generator
// reads.
type adRefs struct {
	ts []atomic.Int64 // Unix milliseconds, 0 for none
}

func newAdRefs(ads int) *adRefs {
	return &adRefs{ts: make([]atomic.Int64, min(ads, maxRefAds))}
}

// note records that a click of ad with event time ts was acknowledged.
func (r *adRefs) note(ad uint32, ts int64) {
	if int(ad) >= len(r.ts) {
		return
	}
	p := &r.ts[ad]
	for {
		cur := p.Load()
		if ts < cur+1000 || p.CompareAndSwap(cur, ts) {
			return
		}
	}
}

// since reports whether ad has an acknowledged click with an event time of at
// least ms.
func (r *adRefs) since(ad uint32, ms int64) bool {
	return int(ad) < len(r.ts) && r.ts[ad].Load() >= ms
}

// generator draws clicks. It is not safe for concurrent use: one goroutine owns it,
// which is what makes a run reproducible from its seed.
type generator struct {
	rng      *rand.Rand
	ads      *zipfAds
	idPrefix string // "lg-<run>-"
	adPrefix string // "ad-", or "ad-<run>-" with Config.RunScopedAds
	refs     *adRefs
	// uaCountry holds the JSON from after the ip to the campaign id's digits, by
	// user agent and country: `","user_agent":"<ua>","country":"<code>","campaign_id":"cmp-`.
	uaCountry [][len(countryWeights)]string
	// octets holds "0." to "255.", padded to 4 bytes, and their lengths.
	octets    [256][4]byte
	octetLens [256]uint8
	cDup      float64
	cBot      float64
	cBurst    float64
	cLate     float64
	cTooLate  float64
	countries [100]uint8
	browsers  [100]uint8

	seq     uint64
	history []click // ring of recent unique clicks
	hpos    int

	burst     click // template of the current burst group
	burstLeft int
	groups    uint64

	// appendClick's caches: the JSON up to the last four digits of the click id
	// and of the ts.
	idHi             uint64
	tsHi             int64
	idCache, tsCache []byte

	key      *clicktoken.Key // ModeRedirect: sign a token per click
	dest     string
	tokenTTL time.Duration
	scratch  []byte
}

// newGenerator returns a generator for cfg, which must have its defaults applied.
func newGenerator(cfg Config) (*generator, error) {
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	g := &generator{
		rng:      rng,
		ads:      newZipfAds(rng, cfg.Ads, cfg.ZipfS),
		idPrefix: "lg-" + cfg.RunID + "-",
		adPrefix: "ad-",
		refs:     newAdRefs(cfg.Ads),
		history:  make([]click, 0, historySize),
		dest:     cfg.Destination,
		tokenTTL: cfg.TokenTTL,
	}
	if cfg.RunScopedAds {
		g.adPrefix = "ad-" + cfg.RunID + "-"
	}
	if g.ads.slow == nil && g.ads.thresh == nil {
		return nil, fmt.Errorf("loadgen config: ZipfS: %v is not a valid Zipf exponent", cfg.ZipfS)
	}
	g.uaCountry = make([][len(countryWeights)]string, len(browserWeights)+len(botAgents))
	for ua := range g.uaCountry {
		for ci, c := range countryWeights {
			g.uaCountry[ua][ci] = `","user_agent":"` + userAgent(uint8(ua)) + `","country":"` + c.code + `","campaign_id":"cmp-`
		}
	}
	for v := range 256 {
		o := appendOctet(nil, uint8(v))
		g.octetLens[v] = uint8(copy(g.octets[v][:], append(o, '.')))
	}
	g.cDup = cfg.DupShare
	g.cBot = g.cDup + cfg.BotShare
	g.cBurst = g.cBot + cfg.BurstShare
	g.cLate = g.cBurst + cfg.LateShare
	g.cTooLate = g.cLate + cfg.TooLateShare
	i := 0
	for ci, c := range countryWeights {
		for range c.weight {
			g.countries[i] = uint8(ci)
			i++
		}
	}
	i = 0
	for bi, b := range browserWeights {
		for range b.weight {
			g.browsers[i] = uint8(bi)
			i++
		}
	}
	if cfg.Mode == ModeRedirect {
		key, err := clicktoken.NewKey(cfg.SigningKey)
		if err != nil {
			return nil, fmt.Errorf("loadgen config: SigningKey: %w", err)
		}
		g.key = key
	}
	return g, nil
}

// next draws the next click; nowMs is the current time in Unix milliseconds.
func (g *generator) next(nowMs int64) click {
	u := g.rng.Float64()
	if u < g.cDup && len(g.history) > 0 {
		c := g.history[g.rng.IntN(len(g.history))]
		c.kind = KindDuplicate
		return c
	}
	c := g.fresh(nowMs)
	switch {
	case u < g.cDup: // nothing to repeat yet: a unique click
	case u < g.cBot:
		c.kind = KindBot
		c.ua = uint8(len(browserWeights) + g.rng.IntN(len(botAgents)))
	case u < g.cBurst:
		g.joinBurst(&c, nowMs)
	case u < g.cLate:
		g.makeLate(&c, nowMs, KindLate, lateMinMs+g.rng.Int64N(lateMaxMs-lateMinMs+1))
	case u < g.cTooLate:
		g.makeLate(&c, nowMs, KindTooLate, tooLateMinMs+g.rng.Int64N(tooLateMaxMs-tooLateMinMs+1))
	}
	if g.key != nil {
		g.sign(&c, nowMs)
	}
	if c.kind == KindUnique {
		if len(g.history) < historySize {
			g.history = append(g.history, c)
		} else {
			g.history[g.hpos] = c
			g.hpos = (g.hpos + 1) % historySize
		}
	}
	return c
}

// fresh draws a new unique click.
func (g *generator) fresh(nowMs int64) click {
	g.seq++
	// One draw feeds several fields, 16 bits each for the table lookups (scaled by
	// multiplication, biased by less than 0.2%).
	r, r2 := g.rng.Uint64(), g.rng.Uint64()
	c := click{
		seq:     g.seq,
		ad:      g.ads.next(),
		ts:      nowMs - int64(r&1023), // clicks of a batch were made over the last second
		country: g.countries[(r>>16&0xffff)*uint64(len(g.countries))>>16],
		ua:      g.browsers[(r>>32&0xffff)*uint64(len(g.browsers))>>16],
	}
	if (r>>10)&3 != 0 { // three in four clicks carry a user id
		c.user = uint32(r2>>40)%(maxUsers-1) + 1
	}
	if (r>>12)&15 == 0 { // one in sixteen from IPv6
		c.v6, c.ip = true, r2
	} else {
		c.ip = uint64(publicOctets[(r>>48&0xffff)*uint64(len(publicOctets))>>16])<<24 | r2&0xffffff
	}
	return c
}

// makeLate makes c a late click of the given kind and age, on its ad or else on
// ad 0, provided that ad has an acknowledged click less than refMaxAgeMs old: that
// click is in the ad's log partition before this one is sent, so the partition's
// watermark puts a late click clearly inside the late horizon and a too-late one
// clearly outside. Without such an ad (at the start of a run), c stays unique.
func (g *generator) makeLate(c *click, nowMs int64, kind Kind, ageMs int64) {
	switch since := nowMs - refMaxAgeMs; {
	case g.refs.since(c.ad, since):
	case g.refs.since(0, since):
		c.ad = 0
	default:
		return
	}
	c.kind, c.ts = kind, nowMs-ageMs
}

// joinBurst turns c into a member of the current burst group, starting a new group
// when the last one is complete. A group is one IPv4 address (its own: see
// burstIP), ad, country and user agent, and its clicks' ts lie in the minute the
// group started.
func (g *generator) joinBurst(c *click, nowMs int64) {
	if g.burstLeft == 0 {
		g.groups++
		g.burstLeft = burstMinSize + g.rng.IntN(burstMaxSize-burstMinSize+1)
		g.burst = click{
			group:   g.groups,
			ts:      nowMs - nowMs%minuteMs,
			ip:      burstIP(g.groups),
			ad:      g.ads.next(),
			ua:      g.browsers[g.rng.IntN(len(g.browsers))],
			country: g.countries[g.rng.IntN(len(g.countries))],
		}
	}
	g.burstLeft--
	t := &g.burst
	c.kind, c.group, c.ip, c.v6, c.ad, c.ua, c.country = KindBurst, t.group, t.ip, false, t.ad, t.ua, t.country
	c.ts = min(max(c.ts, t.ts), t.ts+minuteMs-1)
}

// sign sets c.token: the ad, the click id as impression id, the destination.
func (g *generator) sign(c *click, nowMs int64) {
	g.scratch = g.appendAdID(g.scratch[:0], c.ad)
	ad := string(g.scratch)
	g.scratch = g.appendClickID(g.scratch[:0], c)
	tok, err := g.key.Sign(clicktoken.Claims{
		AdID:         ad,
		ImpressionID: string(g.scratch),
		Destination:  g.dest,
		Expiry:       time.UnixMilli(nowMs).Add(g.tokenTTL),
	})
	if err == nil { // Sign fails only on bad claims, which Config validation rules out
		c.token = tok
	}
}

// appendBatch appends clicks encoded as a JSON array or, if ndjson, as one object
// per line.
func (g *generator) appendBatch(b []byte, clicks []click, ndjson bool) []byte {
	if !ndjson {
		b = append(b, '[')
	}
	for i := range clicks {
		if i > 0 && !ndjson {
			b = append(b, ',')
		}
		b = g.appendClick(b, &clicks[i])
		if ndjson {
			b = append(b, '\n')
		}
	}
	if !ndjson {
		b = append(b, ']')
	}
	return b
}

// appendClick appends c as a JSON object. Every string is built from characters
// that need no escaping.
func (g *generator) appendClick(b []byte, c *click) []byte {
	b = append(b, `{"click_id":"`...)
	// The click id and ts, both long numbers, are written as a cached prefix (all
	// digits but the last four, which change within a batch) and four digits.
	if hi := c.seq / 10_000; hi != 0 {
		if hi != g.idHi {
			g.idHi = hi
			g.idCache = appendUint(append(g.idCache[:0], g.idPrefix...), hi)
		}
		b = append4(append(b, g.idCache...), c.seq%10_000)
		if c.group != 0 {
			b = appendUint(append(b, ".b"...), c.group)
		}
	} else {
		b = g.appendClickID(b, c)
	}
	b = append(b, `","ad_id":"`...)
	b = g.appendAdID(b, c.ad)
	if hi := c.ts / 10_000; c.ts >= 10_000 {
		if hi != g.tsHi {
			g.tsHi = hi
			g.tsCache = appendInt(append(g.tsCache[:0], `","ts":`...), hi)
		}
		b = append4(append(b, g.tsCache...), uint64(c.ts%10_000))
	} else {
		b = append(b, `","ts":`...)
		b = appendInt(b, c.ts)
	}
	b = append(b, `,"ip":"`...)
	if c.v6 {
		b = appendIP(b, c)
	} else {
		for i := 24; i >= 0; i -= 8 {
			o := uint8(c.ip >> i)
			t := &g.octets[o]
			b = append(b, t[0], t[1], t[2], t[3])
			b = b[:len(b)-4+int(g.octetLens[o])]
		}
		b = b[:len(b)-1] // the last dot
	}
	b = append(b, g.uaCountry[c.ua][c.country]...)
	if cmp := uint64(c.ad / campaignSize); cmp < 100_000 {
		b = append4(append(b, byte('0'+cmp/10_000)), cmp%10_000)
	} else {
		b = appendUint(b, cmp)
	}
	if c.user != 0 {
		hi, lo := c.user/10_000, uint64(c.user%10_000)
		b = append4(append(b, `","user_id":"u-`...), uint64(hi))
		b = append4(b, lo)
	}
	return append(b, `"}`...)
}

// appendClickID appends lg-<run>-<seq>, followed by .b<group> for a burst click.
func (g *generator) appendClickID(b []byte, c *click) []byte {
	b = append(b, g.idPrefix...)
	b = appendUint(b, c.seq)
	if c.group != 0 {
		b = append(b, ".b"...)
		b = appendUint(b, c.group)
	}
	return b
}

// appendLedgerLine appends c's ledger line: click_id, ad_id, country, ts_ms, kind,
// ip and ua (an index into the ledger's #ua lines), tab-separated, and a newline.
// Country is left empty when withCountry is false (in redirect mode the server
// derives it).
func (g *generator) appendLedgerLine(b []byte, c *click, withCountry bool) []byte {
	b = g.appendClickID(b, c)
	b = append(b, '\t')
	b = g.appendAdID(b, c.ad)
	b = append(b, '\t')
	if withCountry {
		b = append(b, countryWeights[c.country].code...)
	}
	b = append(b, '\t')
	b = appendInt(b, c.ts)
	b = append(b, '\t')
	b = append(b, kindNames[c.kind]...)
	b = append(b, '\t')
	b = appendIP(b, c)
	b = append(b, '\t')
	b = appendUint(b, uint64(c.ua))
	return append(b, '\n')
}

// appendAdID appends ad-<ad as 6 digits at least>, or ad-<run>-<ad> with
// Config.RunScopedAds.
func (g *generator) appendAdID(b []byte, ad uint32) []byte {
	b = append(b, g.adPrefix...)
	if ad < 1_000_000 {
		hi := ad / 10_000
		return append4(append(b, digitPairs[hi*2], digitPairs[hi*2+1]), uint64(ad%10_000))
	}
	return appendUint(b, uint64(ad))
}

// append4 appends n < 10000 as four digits.
func append4(b []byte, n uint64) []byte {
	q, r := n/100, n%100
	return append(b, digitPairs[q*2], digitPairs[q*2+1], digitPairs[r*2], digitPairs[r*2+1])
}

const digitPairs = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

// appendPadded appends n in decimal, zero-padded to width digits (at most 20).
// It is strconv.AppendUint without the generality, which matters here.
func appendPadded(b []byte, n uint64, width int) []byte {
	var buf [20]byte
	i := len(buf)
	for n >= 100 {
		q := n / 100
		d := (n - q*100) * 2
		i -= 2
		buf[i], buf[i+1] = digitPairs[d], digitPairs[d+1]
		n = q
	}
	if n >= 10 {
		i -= 2
		buf[i], buf[i+1] = digitPairs[n*2], digitPairs[n*2+1]
	} else {
		i--
		buf[i] = byte('0' + n)
	}
	for len(buf)-i < width && i > 0 {
		i--
		buf[i] = '0'
	}
	return append(b, buf[i:]...)
}

func appendInt(b []byte, n int64) []byte {
	if n < 0 {
		return appendUint(append(b, '-'), uint64(-n))
	}
	return appendUint(b, uint64(n))
}

// appendUint appends n in decimal.
func appendUint(b []byte, n uint64) []byte { return appendPadded(b, n, 1) }

func appendIP(b []byte, c *click) []byte {
	if c.v6 {
		b = append(b, "2001:db8::"...)
		for i := 3; i >= 0; i-- {
			b = strconv.AppendUint(b, (c.ip>>(16*i))&0xffff, 16)
			if i > 0 {
				b = append(b, ':')
			}
		}
		return b
	}
	for i := 3; i >= 0; i-- {
		b = appendOctet(b, uint8(c.ip>>(8*i)))
		if i > 0 {
			b = append(b, '.')
		}
	}
	return b
}

func appendOctet(b []byte, v uint8) []byte {
	switch {
	case v >= 100:
		return append(b, '0'+v/100, '0'+v/10%10, '0'+v%10)
	case v >= 10:
		return append(b, '0'+v/10, '0'+v%10)
	default:
		return append(b, '0'+v)
	}
}
