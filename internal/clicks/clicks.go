// Package clicks defines an ad click, its validation rules and its compact binary
// encoding in the event log.
//
// A click enters through the ingestion API (JSON or NDJSON, see Decoder) or a
// redirect (see the redirect package), is validated field by field, and is stored
// as one eventlog.Record in the "clicks" topic: partition = PartitionFor(ad_id),
// Timestamp = event time, Value = AppendBinary's encoding.
//
// Decoder is not safe for concurrent use; everything else is.
package clicks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Topic is the event-log topic that holds clicks.
const Topic = "clicks"

// Field limits of the ingestion contract.
const (
	MaxIDLen        = 128
	MaxUserAgentLen = 512
	MaxFutureSkew   = 5 * time.Minute
)

// Source says how a click reached pedal.
type Source uint8

const (
	SourceAPI      Source = 0 // POST /v1/clicks
	SourceRedirect Source = 1 // GET /v1/r/{token}
)

// Click is one ad click.
type Click struct {
	ClickID    string
	AdID       string
	Time       time.Time // event time, millisecond precision
	ReceivedAt time.Time // when pedal received it, millisecond precision
	IP         netip.Addr
	UserAgent  string
	Country    string // ISO 3166-1 alpha-2, upper case, or ""
	CampaignID string
	UserID     string
	Source     Source
}

// ValidID reports whether s is a valid click or ad id: 1–128 bytes of
// [A-Za-z0-9._:-].
func ValidID[T string | []byte](s T) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !idChar[s[i]] {
			return false
		}
	}
	return true
}

var idChar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['.'], t['_'], t[':'], t['-'] = true, true, true, true
	return t
}()

const wireVersion = 1

// AppendBinary appends the wire encoding of c to dst:
//
//	version u8 | source u8 | time varint (Unix ms) | received−time varint (ms)
//	| ip: len u8 (0, 4 or 16) + bytes | country: 2 bytes or "\0\0"
//	| click_id, ad_id, user_agent, campaign_id, user_id: uvarint length + bytes
func (c *Click) AppendBinary(dst []byte) []byte {
	var country [2]byte
	copy(country[:], c.Country)
	return appendWire(dst, c.Source, c.Time.UnixMilli(), c.ReceivedAt.UnixMilli(), c.IP, country,
		c.ClickID, c.AdID, c.UserAgent, c.CampaignID, c.UserID)
}

func appendWire[T string | []byte](dst []byte, src Source, ts, recv int64, ip netip.Addr, country [2]byte, clickID, adID, ua, campaign, user T) []byte {
	dst = append(dst, wireVersion, byte(src))
	dst = binary.AppendVarint(dst, ts)
	dst = binary.AppendVarint(dst, recv-ts)
	switch {
	case ip.Is4():
		a := ip.As4()
		dst = append(dst, 4)
		dst = append(dst, a[:]...)
	case ip.IsValid():
		a := ip.As16()
		dst = append(dst, 16)
		dst = append(dst, a[:]...)
	default:
		dst = append(dst, 0)
	}
	dst = append(dst, country[0], country[1])
	for _, s := range [...]T{clickID, adID, ua, campaign, user} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

var errWire = errors.New("clicks: malformed click encoding")

// Decode parses the wire encoding produced by AppendBinary.
func Decode(b []byte) (Click, error) {
	var c Click
	if len(b) < 2 || b[0] != wireVersion {
		return c, errWire
	}
	c.Source = Source(b[1])
	b = b[2:]
	ts, n := binary.Varint(b)
	if n <= 0 {
		return c, errWire
	}
	b = b[n:]
	d, n := binary.Varint(b)
	if n <= 0 {
		return c, errWire
	}
	b = b[n:]
	c.Time, c.ReceivedAt = time.UnixMilli(ts), time.UnixMilli(ts+d)
	if len(b) < 1 {
		return c, errWire
	}
	switch ipLen := int(b[0]); ipLen {
	case 0:
	case 4, 16:
		if len(b) < 1+ipLen {
			return c, errWire
		}
		c.IP, _ = netip.AddrFromSlice(b[1 : 1+ipLen])
	default:
		return c, fmt.Errorf("%w: ip length %d", errWire, ipLen)
	}
	b = b[1+c.IP.BitLen()/8:]
	if len(b) < 2 {
		return c, errWire
	}
	if b[0] != 0 {
		c.Country = string(b[:2])
	}
	b = b[2:]
	for _, f := range []*string{&c.ClickID, &c.AdID, &c.UserAgent, &c.CampaignID, &c.UserID} {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return c, errWire
		}
		*f = string(b[n : n+int(l)])
		b = b[n+int(l):]
	}
	if len(b) != 0 {
		return c, fmt.Errorf("%w: %d trailing bytes", errWire, len(b))
	}
	return c, nil
}
