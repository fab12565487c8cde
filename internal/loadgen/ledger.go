package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/clicks/reference"
)

// A ledger is a text file: a header of lines starting with #, then one line per
// acknowledged click in the order of the acknowledgements, its fields separated
// by tabs:
//
//	#pedal-loadgen-ledger	2	<mode>
//	#fields	click_id	ad_id	country	ts_ms	kind	ip	ua
//	#ua	<index>	<user agent>            (one line per user agent)
//	lg-x1-17	ad-000042	US	1772366400100	unique	23.1.2.3	0
//
// The country is empty in redirect mode (the server derives it); ts_ms is the
// event time in Unix milliseconds (in redirect mode the client's clock, the
// server stamps its own); ua is an index into the #ua lines.
const (
	ledgerMagic   = "#pedal-loadgen-ledger"
	ledgerVersion = "2"
	ledgerFields  = "#fields\tclick_id\tad_id\tcountry\tts_ms\tkind\tip\tua"
)

// ledgerWriter appends the acknowledged clicks to the ledger file. Safe for
// concurrent use; the first write error stops the writes and is kept.
type ledgerWriter struct {
	gen         *generator // only its immutable id prefixes are used
	withCountry bool

	mu  sync.Mutex
	f   *os.File
	w   *bufio.Writer
	buf []byte
	err error
}

func createLedger(path string, gen *generator, mode Mode) (*ledgerWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create ledger: %w", err)
	}
	l := &ledgerWriter{gen: gen, withCountry: mode == ModeClicks, f: f, w: bufio.NewWriterSize(f, 1<<20)}
	if _, err := l.w.Write(appendLedgerHeader(nil, mode)); err != nil {
		l.err = fmt.Errorf("write ledger: %w", err)
	}
	return l, nil
}

// appendLedgerHeader appends the header of a ledger of mode.
func appendLedgerHeader(b []byte, mode Mode) []byte {
	b = append(b, ledgerMagic+"\t"+ledgerVersion+"\t"...)
	b = append(b, mode...)
	b = append(b, "\n"+ledgerFields+"\n"...)
	for ua := range len(browserWeights) + len(botAgents) {
		b = append(b, "#ua\t"...)
		b = appendUint(b, uint64(ua))
		b = append(b, '\t')
		b = append(b, userAgent(uint8(ua))...)
		b = append(b, '\n')
	}
	return b
}

// write appends a line for each click but those at the indexes in rejected, which
// is sorted.
func (l *ledgerWriter) write(clicks []click, rejected []int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return
	}
	b := l.buf[:0]
	for i := range clicks {
		if len(rejected) > 0 && rejected[0] == i {
			rejected = rejected[1:]
			continue
		}
		b = l.gen.appendLedgerLine(b, &clicks[i], l.withCountry)
	}
	if _, err := l.w.Write(b); err != nil {
		l.err = fmt.Errorf("write ledger: %w", err)
	}
	if cap(b) <= 1<<20 {
		l.buf = b
	}
}

// close flushes and closes the file, returning the first error of any write.
func (l *ledgerWriter) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		if err := l.w.Flush(); err != nil {
			l.err = fmt.Errorf("write ledger: %w", err)
		}
	}
	if err := l.f.Close(); err != nil && l.err == nil {
		l.err = fmt.Errorf("close ledger: %w", err)
	}
	return l.err
}

// LedgerClick is one click of a ledger.
type LedgerClick struct {
	ClickID, AdID string
	Country       string // empty in redirect mode
	Time          time.Time
	Kind          Kind
	IP            string // as sent
	UserAgent     string
}

// ReadLedger calls fn with each click of a ledger, in ledger order, and returns
// the ledger's mode. It stops at the first error of fn, which it returns.
// Strings that repeat (ad ids, countries, user agents) share their memory.
func ReadLedger(r io.Reader, fn func(LedgerClick) error) (Mode, error) {
	var (
		mode      Mode
		uas       []string
		interned  = make(map[string]string)
		fields    [7][]byte
		sawHeader bool
	)
	intern := func(b []byte) string {
		if s, ok := interned[string(b)]; ok {
			return s
		}
		s := string(b)
		interned[s] = s
		return s
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		bad := func(format string, args ...any) (Mode, error) {
			return "", fmt.Errorf("ledger line %d: %s", lineNo, fmt.Sprintf(format, args...))
		}
		if !sawHeader {
			magic, rest, _ := bytes.Cut(line, []byte{'\t'})
			version, m, _ := bytes.Cut(rest, []byte{'\t'})
			if string(magic) != ledgerMagic || string(version) != ledgerVersion {
				return bad("not a ledger of this pedal loadgen: want a first line %q", ledgerMagic+"\t"+ledgerVersion+"\t<mode>")
			}
			switch mode = Mode(m); mode {
			case ModeClicks, ModeRedirect:
			default:
				return bad("unknown mode %q", m)
			}
			sawHeader = true
			continue
		}
		if line[0] == '#' {
			if name, rest, _ := bytes.Cut(line, []byte{'\t'}); string(name) == "#ua" {
				i, ua, _ := bytes.Cut(rest, []byte{'\t'})
				if string(i) != strconv.Itoa(len(uas)) {
					return bad("user agent %q out of order, want %d", i, len(uas))
				}
				uas = append(uas, string(ua))
			}
			continue
		}
		n := split(line, fields[:])
		if n != len(fields) {
			return bad("want 7 tab-separated fields (click_id, ad_id, country, ts_ms, kind, ip, ua), have %d", n)
		}
		c := LedgerClick{ClickID: string(fields[0]), AdID: intern(fields[1]), Country: intern(fields[2])}
		if !clicks.ValidID(c.ClickID) || !clicks.ValidID(c.AdID) {
			return bad("bad click_id %q or ad_id %q", fields[0], fields[1])
		}
		ts, err := strconv.ParseInt(string(fields[3]), 10, 64)
		if err != nil {
			return bad("ts_ms: %v", err)
		}
		c.Time = time.UnixMilli(ts).UTC()
		if c.Kind, err = ParseKind(string(fields[4])); err != nil {
			return bad("%v", err)
		}
		if len(fields[5]) > 0 {
			ip, err := netip.ParseAddr(string(fields[5]))
			if err != nil {
				return bad("ip: %v", err)
			}
			c.IP = ip.String()
		}
		ua, err := strconv.Atoi(string(fields[6]))
		if err != nil || ua < 0 || ua >= len(uas) {
			return bad("ua %q: not the index of a #ua line", fields[6])
		}
		c.UserAgent = uas[ua]
		if err := fn(c); err != nil {
			return mode, err
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read ledger: %w", err)
	}
	if !sawHeader {
		return "", errors.New("read ledger: empty file, not even a header")
	}
	return mode, nil
}

// split splits line at tabs into fields and returns how many there are, up to
// len(fields)+1.
func split(line []byte, fields [][]byte) int {
	n := 0
	for ; n < len(fields); n++ {
		i := bytes.IndexByte(line, '\t')
		if i < 0 {
			fields[n] = line
			return n + 1
		}
		fields[n], line = line[:i], line[i+1:]
	}
	return n + 1
}

// Quality counts clicks by verdict, like GET /v1/traffic/quality.
type Quality struct {
	Valid      int64
	Bot        int64 // bot_user_agent
	IPRate     int64 // ip_rate
	Duplicates int64
	TooLate    int64
}

func (q *Quality) add(v reference.Verdict) {
	switch v {
	case reference.Valid:
		q.Valid++
	case reference.BotUserAgent:
		q.Bot++
	case reference.IPRate:
		q.IPRate++
	case reference.Duplicate:
		q.Duplicates++
	case reference.TooLate:
		q.TooLate++
	}
}

func (q *Quality) plus(o Quality) {
	q.Valid += o.Valid
	q.Bot += o.Bot
	q.IPRate += o.IPRate
	q.Duplicates += o.Duplicates
	q.TooLate += o.TooLate
}

// Rules returns the rules pedal serve aggregates by, by default: the reference
// model's defaults with the bot list shipped in the binary.
func Rules() reference.Rules {
	return reference.DefaultRules(clicks.DefaultBotSubstrings())
}

// Expected is what pedal's aggregation must make of a ledger's clicks.
type Expected struct {
	Mode   Mode
	Clicks int64          // lines of the ledger
	ByKind map[Kind]int64 // lines by the kind the click was sent as
	// Result holds the windows by ad, country and minute, and the verdicts.
	Result reference.Result
	// Quality holds the verdicts by ad.
	Quality map[string]Quality
	// First and Last are the smallest and largest event times; zero without
	// clicks.
	First, Last time.Time
}

// Expect feeds the clicks of a ledger, in ledger order, to a reference model
// (reference.New(rules)) and returns what it counted. The ledger order is the
// order of the acknowledgements, which is the log order but for requests that
// were in flight together; the generated stream makes the windows' totals
// independent of that (see the package comment).
//
// The model keeps every click it has seen: it needs a few hundred bytes per click.
func Expect(r io.Reader, rules reference.Rules) (Expected, error) {
	m := reference.New(rules)
	e := Expected{ByKind: make(map[Kind]int64), Quality: make(map[string]Quality)}
	mode, err := ReadLedger(r, func(c LedgerClick) error {
		e.Clicks++
		e.ByKind[c.Kind]++
		if e.First.IsZero() || c.Time.Before(e.First) {
			e.First = c.Time
		}
		if c.Time.After(e.Last) {
			e.Last = c.Time
		}
		v := m.Add(reference.Click{
			ClickID: c.ClickID, AdID: c.AdID, Country: c.Country,
			UserAgent: c.UserAgent, IP: c.IP, Time: c.Time,
		})
		q := e.Quality[c.AdID]
		q.add(v)
		e.Quality[c.AdID] = q
		return nil
	})
	if err != nil {
		return Expected{}, err
	}
	e.Mode, e.Result = mode, m.Result()
	return e, nil
}
