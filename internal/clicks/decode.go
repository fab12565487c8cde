package clicks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fastjson"

	"github.com/pedal-project/pedal/internal/eventlog"
)

// Rejection says why one record of a request was refused.
type Rejection struct {
	Index   int    `json:"index"`
	Code    string `json:"code"`
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Rejection codes.
const (
	CodeMissing     = "missing"      // a required field is absent or null
	CodeInvalid     = "invalid"      // wrong JSON type or format
	CodeTooLong     = "too_long"     // longer than the field allows
	CodeInFuture    = "ts_in_future" // ts more than MaxFutureSkew ahead of receipt
	CodeTooOld      = "ts_too_old"   // ts older than the maximum event age
	CodeNotAnObject = "not_object"   // an array element or line that is not an object
)

// FramingError reports a body that cannot be split into records: broken JSON, or
// a bad NDJSON line. Offset is a byte offset into the body; Line is 1-based and set
// for NDJSON only.
type FramingError struct {
	Offset int64
	Line   int
	Msg    string
}

func (e *FramingError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("at byte offset %d: %s", e.Offset, e.Msg)
}

// Batch accumulates the encoded clicks of one request. Its zero value is ready; reuse
// it with Reset.
type Batch struct {
	buf      []byte
	items    []item
	Rejected []Rejection
}

type item struct {
	hash       uint64 // xxHash of ad_id, for the partition
	ts         int64  // event time, Unix ms
	start, end int
}

// Len returns the number of accepted clicks.
func (b *Batch) Len() int { return len(b.items) }

// Reset empties b, keeping its memory.
func (b *Batch) Reset() {
	b.buf, b.items, b.Rejected = b.buf[:0], b.items[:0], b.Rejected[:0]
}

// Records appends to dst one record per accepted click, partitioned by ad_id over
// the given number of partitions. The records' values alias b's memory until b is
// reset.
func (b *Batch) Records(dst []eventlog.Record, partitions int32) []eventlog.Record {
	for _, it := range b.items {
		dst = append(dst, eventlog.Record{
			Partition: int32(it.hash % uint64(partitions)),
			Timestamp: time.UnixMilli(it.ts),
			Value:     b.buf[it.start:it.end:it.end],
		})
	}
	return dst
}

// Add appends a click that was validated elsewhere (a redirect click).
func (b *Batch) Add(c *Click) {
	start := len(b.buf)
	b.buf = c.AppendBinary(b.buf)
	b.items = append(b.items, item{hash: xxhash.Sum64String(c.AdID), ts: c.Time.UnixMilli(), start: start, end: len(b.buf)})
}

// Decoder parses and validates ingestion request bodies. It reuses its parser's
// memory between calls, so one Decoder serves one request at a time.
type Decoder struct {
	// MaxEventAge: clicks whose ts is older than receipt minus this are rejected;
	// zero means 168h.
	MaxEventAge time.Duration

	p fastjson.Parser
}

// DecodeJSON parses body, one click object or an array of them, received at now,
// into b: valid clicks are encoded, invalid ones listed in b.Rejected. It fails
// only for malformed framing, with a *FramingError.
func (d *Decoder) DecodeJSON(body []byte, now time.Time, b *Batch) error {
	v, err := d.p.ParseBytes(body)
	if err != nil {
		return syntaxError(body, 0, 0, err)
	}
	switch v.Type() {
	case fastjson.TypeObject:
		d.add(b, 0, v, now)
	case fastjson.TypeArray:
		arr, _ := v.Array()
		for i, e := range arr {
			d.add(b, i, e, now)
		}
	default:
		return &FramingError{Msg: "body must be a JSON object or an array of objects, not " + v.Type().String()}
	}
	return nil
}

// DecodeNDJSON parses body, one click object per line (blank lines ignored),
// received at now, into b. Record indexes count non-blank lines from 0. A line that
// is not valid JSON fails the whole body with a *FramingError naming the line.
func (d *Decoder) DecodeNDJSON(body []byte, now time.Time, b *Batch) error {
	index := 0
	for line, off := 1, 0; off < len(body); line++ {
		end := bytes.IndexByte(body[off:], '\n')
		if end < 0 {
			end = len(body)
		} else {
			end += off
		}
		l := body[off:end]
		start := off
		off = end + 1
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		v, err := d.p.ParseBytes(l)
		if err != nil {
			return syntaxError(l, int64(start), line, err)
		}
		d.add(b, index, v, now)
		index++
	}
	return nil
}

// syntaxError builds a FramingError with the byte offset of the error, found by
// encoding/json (fastjson's errors carry no offset); this runs only on bad input.
func syntaxError(body []byte, base int64, line int, perr error) *FramingError {
	var raw json.RawMessage
	err := json.Unmarshal(body, &raw)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		// encoding/json counts the offending byte as read; report its position.
		return &FramingError{Offset: base + max(se.Offset-1, 0), Line: line, Msg: "invalid JSON: " + se.Error()}
	}
	if err != nil {
		return &FramingError{Offset: base + int64(len(body)), Line: line, Msg: "invalid JSON: " + err.Error()}
	}
	return &FramingError{Offset: base, Line: line, Msg: "invalid JSON: " + perr.Error()}
}

// fields holds one object's raw values while it is validated.
type fields struct {
	clickID, adID, ua, campaign, user []byte
	ts                                int64
	ip                                netip.Addr
	country                           [2]byte
}

func (d *Decoder) add(b *Batch, index int, v *fastjson.Value, now time.Time) {
	if v.Type() != fastjson.TypeObject {
		b.Rejected = append(b.Rejected, Rejection{index, CodeNotAnObject, "", "record is a JSON " + v.Type().String() + ", not an object"})
		return
	}
	var f fields
	if code, field, msg := d.validate(v, now, &f); code != "" {
		b.Rejected = append(b.Rejected, Rejection{index, code, field, msg})
		return
	}
	start := len(b.buf)
	b.buf = appendWire(b.buf, SourceAPI, f.ts, now.UnixMilli(), f.ip, f.country, f.clickID, f.adID, f.ua, f.campaign, f.user)
	b.items = append(b.items, item{hash: xxhash.Sum64(f.adID), ts: f.ts, start: start, end: len(b.buf)})
}

func (d *Decoder) validate(v *fastjson.Value, now time.Time, f *fields) (code, field, msg string) {
	o, _ := v.Object()
	f.ts = now.UnixMilli()
	var (
		tsVal             *fastjson.Value
		haveClick, haveAd bool
	)
	o.Visit(func(key []byte, v *fastjson.Value) {
		if code != "" || v.Type() == fastjson.TypeNull {
			return
		}
		switch string(key) {
		case "click_id":
			f.clickID, haveClick = stringField(v, "click_id", &code, &field, &msg), true
		case "ad_id":
			f.adID, haveAd = stringField(v, "ad_id", &code, &field, &msg), true
		case "ts":
			tsVal = v
		case "ip":
			f.ip = ipField(v, &code, &field, &msg)
		case "user_agent":
			f.ua = stringField(v, "user_agent", &code, &field, &msg)
		case "country":
			c := stringField(v, "country", &code, &field, &msg)
			if code == "" {
				var ok bool
				if f.country, ok = normalizeCountry(c); !ok {
					code, field, msg = CodeInvalid, "country", fmt.Sprintf("country %q is not an ISO 3166-1 alpha-2 code", c)
				}
			}
		case "campaign_id":
			f.campaign = stringField(v, "campaign_id", &code, &field, &msg)
		case "user_id":
			f.user = stringField(v, "user_id", &code, &field, &msg)
		}
	})
	switch {
	case code != "":
		return code, field, msg
	case !haveClick:
		return CodeMissing, "click_id", "click_id is required"
	case !haveAd:
		return CodeMissing, "ad_id", "ad_id is required"
	}
	for _, id := range [...]struct {
		name string
		v    []byte
	}{{"click_id", f.clickID}, {"ad_id", f.adID}} {
		if len(id.v) > MaxIDLen {
			return CodeTooLong, id.name, fmt.Sprintf("%s is %d bytes, at most %d allowed", id.name, len(id.v), MaxIDLen)
		}
		if !ValidID(id.v) {
			return CodeInvalid, id.name, id.name + " must be 1-128 characters of [A-Za-z0-9._:-]"
		}
	}
	if len(f.ua) > MaxUserAgentLen {
		return CodeTooLong, "user_agent", fmt.Sprintf("user_agent is %d bytes, at most %d allowed", len(f.ua), MaxUserAgentLen)
	}
	for _, s := range [...]struct {
		name string
		v    []byte
	}{{"campaign_id", f.campaign}, {"user_id", f.user}} {
		if len(s.v) > MaxIDLen {
			return CodeTooLong, s.name, fmt.Sprintf("%s is %d bytes, at most %d allowed", s.name, len(s.v), MaxIDLen)
		}
	}
	if tsVal != nil {
		if code, msg := d.parseTS(tsVal, now, &f.ts); code != "" {
			return code, "ts", msg
		}
	}
	return "", "", ""
}

func (d *Decoder) parseTS(v *fastjson.Value, now time.Time, ts *int64) (code, msg string) {
	switch v.Type() {
	case fastjson.TypeNumber:
		ms, err := v.Int64()
		if err != nil {
			return CodeInvalid, "ts must be an integer of Unix milliseconds or an RFC 3339 string"
		}
		*ts = ms
	case fastjson.TypeString:
		t, err := time.Parse(time.RFC3339Nano, transient(v.GetStringBytes()))
		if err != nil {
			return CodeInvalid, fmt.Sprintf("ts %q is not an RFC 3339 date-time", v.GetStringBytes())
		}
		*ts = t.UnixMilli()
	default:
		return CodeInvalid, "ts must be an integer of Unix milliseconds or an RFC 3339 string, not " + v.Type().String()
	}
	maxAge := d.MaxEventAge
	if maxAge <= 0 {
		maxAge = 168 * time.Hour
	}
	nowMs := now.UnixMilli()
	switch {
	case *ts > nowMs+MaxFutureSkew.Milliseconds():
		return CodeInFuture, fmt.Sprintf("ts %s is more than %v after the time of receipt", time.UnixMilli(*ts).UTC().Format(time.RFC3339Nano), MaxFutureSkew)
	case *ts < nowMs-maxAge.Milliseconds():
		return CodeTooOld, fmt.Sprintf("ts %s is older than the maximum event age %v", time.UnixMilli(*ts).UTC().Format(time.RFC3339Nano), maxAge)
	}
	return "", ""
}

// transient views b as a string without copying. The string must not outlive the
// call it is passed to (errors that quote it are dropped), since b is the parser's
// memory and is reused by the next request.
func transient(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func stringField(v *fastjson.Value, name string, code, field, msg *string) []byte {
	if v.Type() != fastjson.TypeString {
		*code, *field, *msg = CodeInvalid, name, name+" must be a string, not "+v.Type().String()
		return nil
	}
	return v.GetStringBytes()
}

func ipField(v *fastjson.Value, code, field, msg *string) netip.Addr {
	b := stringField(v, "ip", code, field, msg)
	if *code != "" {
		return netip.Addr{}
	}
	ip, err := netip.ParseAddr(transient(b))
	if err != nil || ip.Zone() != "" {
		*code, *field, *msg = CodeInvalid, "ip", fmt.Sprintf("ip %q is not an IPv4 or IPv6 address", b)
		return netip.Addr{}
	}
	return ip.Unmap()
}
