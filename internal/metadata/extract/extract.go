package extract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"golang.org/x/net/html/charset"
)

// Length caps, in bytes, for text fields. Longer values are cut at a rune
// boundary.
const (
	maxTitle = 512
	maxDesc  = 2048
	maxShort = 256  // site name, type, locale, lang, author, published_at
	maxURL   = 2048 // URLs longer than this are dropped, not cut
	maxAlt   = 512

	maxTokenBuf = 1 << 20 // one token (tag, text run) larger than this ends the parse
)

// Options tunes Extract. The zero value is useful.
type Options struct {
	IncludeImages  bool // fill Metadata.Images
	MaxImages      int  // default 20
	MaxJSONLD      int  // blocks kept; default 10
	MaxJSONLDBytes int  // size of one block; default 64 KiB; larger blocks are dropped
}

func (o *Options) defaults() {
	if o.MaxImages <= 0 {
		o.MaxImages = 20
	}
	if o.MaxJSONLD <= 0 {
		o.MaxJSONLD = 10
	}
	if o.MaxJSONLDBytes <= 0 {
		o.MaxJSONLDBytes = 64 << 10
	}
}

// Image is one preview image. Width, Height and Alt come from og:image:width,
// og:image:height and og:image:alt (or the twitter: or <img> equivalents) of
// the same image; zero or empty when not given.
type Image struct {
	URL           string
	Width, Height int
	Alt           string
}

// Metadata is what Extract found. Empty strings mean "not found".
type Metadata struct {
	Title, Description, SiteName, CanonicalURL, Type, Locale, Lang, Author string

	PublishedAt string            // RFC 3339 when parseable, else as found
	Images      []Image           // only with Options.IncludeImages: og:image, twitter:image, then <img>, deduplicated
	Favicon     string            // link rel=icon / shortcut icon, else apple-touch-icon, else /favicon.ico on the document's host
	OEmbedURL   string            // <link rel=alternate type=application/json+oembed>; for the caller to fetch
	JSONLD      []json.RawMessage // valid JSON only, compacted, in document order
}

// Extract parses the HTML document r, served with contentType (used for the
// charset) from base, the final URL after redirects. r should already be
// size-capped by the caller.
//
// Relative URLs are resolved against base, or against the first <base href>
// (itself resolved against base) when that yields an http(s) URL; only
// absolute http and https URLs are returned. base may be nil, in which case
// only absolute http(s) URLs in the document are kept and there is no
// favicon fallback.
//
// Fallback chains (first non-empty wins):
//
//	Title:        og:title, twitter:title, <title> in the document (not in <svg>), JSON-LD headline/name, first <h1>
//	Description:  og:description, twitter:description, meta description, JSON-LD description
//	SiteName:     og:site_name, meta application-name, JSON-LD publisher.name
//	CanonicalURL: og:url, twitter:url, link rel=canonical
//	Author:       article:author (unless a URL), meta author, dc.creator, JSON-LD author.name; a leading "By " is dropped
//	PublishedAt:  article:published_time, meta itemprop=datePublished, article.published, pubdate, publishdate,
//	              date, dc.date, dcterms.created, citation_publication_date, JSON-LD datePublished/uploadDate/dateCreated,
//	              the first <time datetime>
//
// The returned error reports only a failure to read r or an unknown
// encoding label; what was parsed before a read error is still returned.
func Extract(r io.Reader, contentType string, base *url.URL, opt Options) (Metadata, error) {
	opt.defaults()
	rd, err := charset.NewReader(r, contentType)
	if err != nil {
		return Metadata{}, fmt.Errorf("extract: decode: %w", err)
	}
	p := parser{opt: opt, doc: base, base: base, meta: map[string]string{}}
	err = p.run(rd)
	return p.result(), err
}

type parser struct {
	opt       Options
	doc, base *url.URL
	sawBase   bool

	meta      map[string]string // first non-empty value per lower-cased name/property
	title, h1 string
	timeTag   string // datetime of the first <time datetime>
	lang      string
	canonical string
	icon      string // rel=icon / shortcut icon
	touchIcon string // rel=apple-touch-icon
	oembed    string

	ogImages, twImages, imgImages []Image
	imgCount                      int // images from <img>, capped

	jsonld   []json.RawMessage
	ldValues []map[string]any // top-level JSON-LD objects, for fallbacks
}

func (p *parser) run(r io.Reader) error {
	z := html.NewTokenizer(r)
	z.SetMaxBuf(maxTokenBuf)
	var (
		svgDepth int
		inTitle  bool
		inH1     bool
		inLD     bool
		text     strings.Builder
	)
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			if err := z.Err(); err != io.EOF {
				if errors.Is(err, html.ErrBufferExceeded) {
					return nil // a giant token: keep what we have
				}
				return fmt.Errorf("extract: read: %w", err)
			}
			return nil
		case html.TextToken:
			if inTitle || inH1 || inLD {
				if text.Len() < p.opt.MaxJSONLDBytes+1 && text.Len() < maxTokenBuf {
					text.Write(z.Text())
				}
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			a := atom.Lookup(name)
			if svgDepth > 0 || a == atom.Svg || a == atom.Math {
				if (a == atom.Svg || a == atom.Math) && tt == html.StartTagToken {
					svgDepth++ // <title> inside inline SVG is not the document title
				}
				continue
			}
			attrs := readAttrs(z, hasAttr)
			switch a {
			case atom.Html:
				if p.lang == "" {
					p.lang = clean(attrs["lang"], maxShort)
				}
			case atom.Base:
				p.setBase(attrs["href"])
			case atom.Meta:
				p.onMeta(attrs)
			case atom.Link:
				p.onLink(attrs)
			case atom.Img:
				if p.opt.IncludeImages && p.imgCount < p.opt.MaxImages {
					src := attrs["src"]
					if src == "" {
						src = attrs["data-src"]
					}
					if u := p.resolve(src); u != "" {
						p.imgImages = append(p.imgImages, Image{URL: u, Width: atoiDim(attrs["width"]), Height: atoiDim(attrs["height"]), Alt: clean(attrs["alt"], maxAlt)})
						p.imgCount++
					}
				}
			case atom.Time:
				if p.timeTag == "" {
					p.timeTag = strings.TrimSpace(attrs["datetime"])
				}
			case atom.Title:
				if tt == html.StartTagToken && p.title == "" {
					inTitle = true
					text.Reset()
				}
			case atom.H1:
				if tt == html.StartTagToken && p.h1 == "" {
					inH1 = true
					text.Reset()
				}
			case atom.Script:
				if tt == html.StartTagToken && strings.EqualFold(strings.TrimSpace(attrs["type"]), "application/ld+json") && len(p.jsonld) < p.opt.MaxJSONLD {
					inLD = true
					text.Reset()
				}
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			a := atom.Lookup(name)
			if svgDepth > 0 {
				if a == atom.Svg || a == atom.Math {
					svgDepth--
				}
				continue
			}
			switch {
			case a == atom.Title && inTitle:
				inTitle = false
				p.title = clean(text.String(), maxTitle)
			case a == atom.H1 && inH1:
				inH1 = false
				p.h1 = clean(text.String(), maxTitle)
			case a == atom.Script && inLD:
				inLD = false
				p.addJSONLD(text.String())
			}
		}
	}
}

func readAttrs(z *html.Tokenizer, more bool) map[string]string {
	m := make(map[string]string, 4)
	for more {
		var k, v []byte
		k, v, more = z.TagAttr()
		key := string(k) // the tokenizer lower-cases attribute names
		if _, dup := m[key]; !dup {
			m[key] = string(v)
		}
	}
	return m
}

func (p *parser) setBase(href string) {
	if p.sawBase || p.doc == nil {
		return
	}
	p.sawBase = true // only the first <base href> counts, as in browsers
	href = strings.TrimSpace(href)
	if href == "" {
		return
	}
	ref, err := url.Parse(href)
	if err != nil {
		return
	}
	u := p.doc.ResolveReference(ref)
	if isHTTP(u) {
		p.base = u
	}
}

// resolve returns raw as an absolute http(s) URL string, or "".
func (p *parser) resolve(raw string) string {
	raw = strings.TrimSpace(raw)
	if raw == "" || len(raw) > maxURL {
		return ""
	}
	ref, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	u := ref
	if p.base != nil {
		u = p.base.ResolveReference(ref)
	}
	if !isHTTP(u) {
		return ""
	}
	s := u.String()
	if len(s) > maxURL {
		return ""
	}
	return s
}

func isHTTP(u *url.URL) bool {
	return u != nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Opaque == ""
}

func (p *parser) onMeta(attrs map[string]string) {
	key := attrs["property"]
	if key == "" {
		key = attrs["name"]
	}
	if key == "" {
		key = attrs["itemprop"]
	}
	key = strings.ToLower(strings.TrimSpace(key))
	if key == "" {
		return
	}
	val, ok := attrs["content"]
	if !ok {
		val = attrs["value"] // some twitter: tags use value=
	}
	val = strings.TrimSpace(val)
	if val == "" {
		return // empty values never win a fallback chain
	}
	switch key {
	case "og:image", "og:image:url", "og:image:secure_url":
		p.ogImages = addImageURL(p.ogImages, key != "og:image", p.resolve(val), p.opt.MaxImages)
		return
	case "og:image:width", "og:image:height", "og:image:alt":
		setImageAttr(p.ogImages, key[len("og:image:"):], val)
		return
	case "twitter:image", "twitter:image:src":
		p.twImages = addImageURL(p.twImages, false, p.resolve(val), p.opt.MaxImages)
		return
	case "twitter:image:width", "twitter:image:height", "twitter:image:alt":
		setImageAttr(p.twImages, key[len("twitter:image:"):], val)
		return
	}
	if _, seen := p.meta[key]; !seen && len(p.meta) < 512 {
		p.meta[key] = val
	}
}

// addImageURL appends an image for u. When amend is set (og:image:url,
// og:image:secure_url) and the last image has the same or no URL, it
// completes that image instead of starting a new one.
func addImageURL(imgs []Image, amend bool, u string, max int) []Image {
	if u == "" {
		return imgs
	}
	if n := len(imgs); n > 0 && amend {
		last := &imgs[n-1]
		if last.URL == "" {
			last.URL = u
			return imgs
		}
		if strings.HasPrefix(u, "https:") && strings.TrimPrefix(last.URL, "http:") == strings.TrimPrefix(u, "https:") {
			last.URL = u // secure_url upgrades the same image
			return imgs
		}
		if last.URL == u {
			return imgs
		}
	}
	if len(imgs) >= max {
		return imgs
	}
	return append(imgs, Image{URL: u})
}

// setImageAttr attaches a structured property to the most recent image: that is
// how Open Graph arrays bind og:image:width to its og:image.
func setImageAttr(imgs []Image, attr, val string) {
	if len(imgs) == 0 {
		return
	}
	img := &imgs[len(imgs)-1]
	switch attr {
	case "width":
		if img.Width == 0 {
			img.Width = atoiDim(val)
		}
	case "height":
		if img.Height == 0 {
			img.Height = atoiDim(val)
		}
	case "alt":
		if img.Alt == "" {
			img.Alt = clean(val, maxAlt)
		}
	}
}

func atoiDim(s string) int {
	s = strings.TrimSuffix(strings.TrimSpace(s), "px")
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1<<20 {
		return 0
	}
	return n
}

func (p *parser) onLink(attrs map[string]string) {
	href := attrs["href"]
	if strings.TrimSpace(href) == "" {
		return
	}
	rels := strings.Fields(strings.ToLower(attrs["rel"]))
	for _, rel := range rels {
		switch rel {
		case "canonical":
			if p.canonical == "" {
				p.canonical = p.resolve(href)
			}
		case "icon":
			if p.icon == "" {
				p.icon = p.resolve(href)
			}
		case "apple-touch-icon", "apple-touch-icon-precomposed":
			if p.touchIcon == "" {
				p.touchIcon = p.resolve(href)
			}
		case "alternate":
			typ := strings.ToLower(strings.TrimSpace(attrs["type"]))
			if p.oembed == "" && (typ == "application/json+oembed" || typ == "text/json+oembed") {
				p.oembed = p.resolve(href)
			}
		}
	}
}

func (p *parser) addJSONLD(s string) {
	if len(p.jsonld) >= p.opt.MaxJSONLD || len(s) > p.opt.MaxJSONLDBytes {
		return
	}
	b := bytes.TrimSpace([]byte(s))
	if !json.Valid(b) {
		b = repairJSON(b)
	}
	if len(b) == 0 || !json.Valid(b) {
		return
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return
	}
	if bytes.Equal(buf.Bytes(), []byte("null")) {
		return
	}
	p.jsonld = append(p.jsonld, json.RawMessage(buf.Bytes()))
	var v any
	if json.Unmarshal(b, &v) != nil {
		return
	}
	collectLD(v, &p.ldValues, 0)
}

// collectLD gathers the top-level objects of a JSON-LD value: the value
// itself, array elements and @graph members.
func collectLD(v any, out *[]map[string]any, depth int) {
	if depth > 3 || len(*out) >= 64 {
		return
	}
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			collectLD(e, out, depth+1)
		}
	case map[string]any:
		*out = append(*out, v)
		if g, ok := v["@graph"]; ok {
			collectLD(g, out, depth+1)
		}
	}
}

// ld returns the first string found under key in the JSON-LD objects; for an
// object value (author, publisher) it takes its "name".
func (p *parser) ld(key string) string {
	for _, obj := range p.ldValues {
		if s := ldString(obj[key], 0); s != "" {
			return s
		}
	}
	return ""
}

func ldString(v any, depth int) string {
	switch v := v.(type) {
	case string:
		return v
	case map[string]any:
		if depth < 2 {
			return ldString(v["name"], depth+1)
		}
	case []any:
		if len(v) > 0 && depth < 2 {
			return ldString(v[0], depth+1)
		}
	}
	return ""
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func (p *parser) result() Metadata {
	m := p.meta
	md := Metadata{
		Title:        clean(first(m["og:title"], m["twitter:title"], p.title, p.ld("headline"), p.ld("name"), p.h1), maxTitle),
		Description:  clean(first(m["og:description"], m["twitter:description"], m["description"], p.ld("description")), maxDesc),
		SiteName:     clean(first(m["og:site_name"], m["application-name"], ldPublisher(p)), maxShort),
		Type:         clean(m["og:type"], maxShort),
		Locale:       clean(m["og:locale"], maxShort),
		Lang:         p.lang,
		CanonicalURL: first(p.resolve(m["og:url"]), p.resolve(m["twitter:url"]), p.canonical),
		Favicon:      first(p.icon, p.touchIcon, p.defaultFavicon()),
		OEmbedURL:    p.oembed,
		JSONLD:       p.jsonld,
	}
	author := m["article:author"]
	if looksLikeURL(author) {
		author = ""
	}
	md.Author = clean(first(author, m["author"], m["dc.creator"], p.ld("author")), maxShort)
	if len(md.Author) > 3 && strings.EqualFold(md.Author[:3], "by ") {
		md.Author = strings.TrimSpace(md.Author[3:]) // a byline, "By Jane Doe"
	}
	if looksLikeURL(md.Author) {
		md.Author = ""
	}
	md.PublishedAt = normalizeTime(clean(first(m["article:published_time"], m["datepublished"], m["article.published"],
		m["pubdate"], m["publishdate"], m["date"], m["dc.date"], m["dcterms.created"], m["citation_publication_date"],
		p.ld("datePublished"), p.ld("uploadDate"), p.ld("dateCreated"), p.timeTag), maxShort))
	if p.opt.IncludeImages {
		md.Images = mergeImages(p.opt.MaxImages, p.ogImages, p.twImages, p.imgImages)
	}
	return md
}

func ldPublisher(p *parser) string {
	for _, obj := range p.ldValues {
		if pub, ok := obj["publisher"].(map[string]any); ok {
			if s, ok := pub["name"].(string); ok && s != "" {
				return s
			}
		}
	}
	return ""
}

func (p *parser) defaultFavicon() string {
	if !isHTTP(p.doc) {
		return ""
	}
	return (&url.URL{Scheme: p.doc.Scheme, Host: p.doc.Host, Path: "/favicon.ico"}).String()
}

func looksLikeURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

func mergeImages(max int, lists ...[]Image) []Image {
	var out []Image
	seen := map[string]int{}
	for _, l := range lists {
		for _, img := range l {
			if img.URL == "" {
				continue
			}
			if i, ok := seen[img.URL]; ok {
				o := &out[i] // a later source may know the size the first did not
				if o.Width == 0 && o.Height == 0 {
					o.Width, o.Height = img.Width, img.Height
				}
				if o.Alt == "" {
					o.Alt = img.Alt
				}
				continue
			}
			if len(out) >= max {
				return out
			}
			seen[img.URL] = len(out)
			out = append(out, img)
		}
	}
	return out
}

var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05Z0700",
	"2006-01-02T15:04:05",
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04:05",
	"2006-01-02",
	"2006/01/02",
	time.RFC1123Z,
	time.RFC1123,
}

// normalizeTime returns s as RFC 3339 when it parses with a known layout
// (values without a zone are taken as UTC), else s unchanged.
func normalizeTime(s string) string {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.Format(time.RFC3339)
		}
	}
	return s
}

// clean collapses runs of white space to one space, trims, drops invalid
// UTF-8 and control characters, and cuts to at most max bytes on a rune
// boundary.
func clean(s string, max int) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	space := false
	for _, r := range s {
		if b.Len() >= max+4 {
			break
		}
		switch {
		case r == utf8.RuneError:
			continue
		case r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\v' || r == 0xA0 || r == 0x85 || r == 0x2028 || r == 0x2029:
			space = true
			continue
		case r < 0x20 || r == 0x7f:
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = strings.TrimRight(out[:cut], " ")
	}
	return out
}

// repairJSON fixes the mistakes publishers commonly make in JSON-LD blocks,
// which browsers and search engines tolerate: an HTML comment wrapper
// (<!-- ... -->) around the block or a comment before it, // and /* */
// comments and trailing commas outside strings, and raw control characters (new lines, tabs) inside strings. Everything
// inside strings is otherwise kept as is. The caller still validates the
// result.
func repairJSON(b []byte) []byte {
	out := make([]byte, 0, len(b))
	inStr, esc := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			case c == '\n':
				out = append(out, '\\', 'n')
				continue
			case c == '\r':
				out = append(out, '\\', 'r')
				continue
			case c == '\t':
				out = append(out, '\\', 't')
				continue
			case c < 0x20:
				out = append(out, fmt.Sprintf("\\u%04x", c)...)
				continue
			}
			out = append(out, c)
			continue
		}
		rest := b[i:]
		switch {
		case c == '"':
			inStr = true
		case c == '}' || c == ']':
			// A trailing comma, often left by a commented-out last member.
			t := bytes.TrimRight(out, " \t\r\n")
			if len(t) > 0 && t[len(t)-1] == ',' {
				out = t[:len(t)-1]
			}
		case bytes.HasPrefix(rest, []byte("<!--")):
			// A comment holding prose is dropped whole; one wrapping the
			// JSON (<!-- {...} -->) loses only its markers.
			end := bytes.Index(rest, []byte("-->"))
			if end > 0 && !bytes.ContainsAny(rest[4:end], "{[") {
				i += end + 2
			} else {
				i += 3
			}
			continue
		case bytes.HasPrefix(rest, []byte("-->")):
			i += 2
			continue
		case bytes.HasPrefix(rest, []byte("//")):
			for i < len(b) && b[i] != '\n' {
				i++
			}
			continue
		case bytes.HasPrefix(rest, []byte("/*")):
			end := bytes.Index(rest[2:], []byte("*/"))
			if end < 0 {
				return out
			}
			i += end + 3
			continue
		}
		out = append(out, c)
	}
	return bytes.TrimSpace(out)
}
