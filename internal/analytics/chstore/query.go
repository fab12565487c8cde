package chstore

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/pedal-project/pedal/internal/analytics"
)

// Reads see the latest version of each key before background merges by
// deduplicating at query time with FINAL, or, when s.argMax is set (for
// BenchmarkRead), with an inner GROUP BY of the replacing key and
// argMax(column, version). On 18.16 FINAL is 2-9 times faster (see the package
// comment). Every filter is on key columns, so filtering before deduplication
// is correct.
//
// Arguments are bound by clickhouse-go on the client (18.16 has no server-side
// parameters): strings are quoted and escaped, times are whole Unix seconds.

// secondsRange returns the Unix seconds [lo, hi) of the DateTime values in
// [from, to), clamped to DateTime's range.
func secondsRange(from, to time.Time) (lo, hi int64) {
	return ceilSeconds(from), ceilSeconds(to)
}

func ceilSeconds(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return min(max(s, 0), math.MaxUint32)
}

// where returns the conditions and arguments of a query.
func where(adID, country string, lo, hi int64) (string, []any) {
	conds := []string{"start >= toDateTime(?)", "start < toDateTime(?)"}
	args := []any{lo, hi}
	if adID != "" {
		conds = append(conds, "ad_id = ?")
		args = append(args, adID)
	}
	if country != "" {
		conds = append(conds, "country = ?")
		args = append(args, country)
	}
	return strings.Join(conds, " AND "), args
}

// source returns a FROM clause giving the latest version of each key matching
// cond, with the named columns (expressions of the table's columns).
func (s *Store) source(cond string, cols ...string) string {
	if !s.argMax {
		sel := make([]string, len(cols))
		for i, c := range cols {
			name, expr, _ := strings.Cut(c, "=")
			sel[i] = expr + " AS " + name
		}
		return fmt.Sprintf("(SELECT ad_id, start, %s FROM %s FINAL WHERE %s)", strings.Join(sel, ", "), s.table, cond)
	}
	sel := make([]string, len(cols))
	for i, c := range cols {
		name, expr, _ := strings.Cut(c, "=")
		sel[i] = fmt.Sprintf("argMax(%s, version) AS %s", expr, name)
	}
	return fmt.Sprintf("(SELECT ad_id, start, %s FROM %s WHERE %s GROUP BY ad_id, country, start)",
		strings.Join(sel, ", "), s.table, cond)
}

// Series implements analytics.Store.
func (s *Store) Series(ctx context.Context, adID, country string, from, to time.Time, g analytics.Granularity) ([]analytics.Point, error) {
	if s.isClosed() {
		return nil, analytics.ErrClosed
	}
	step := int64(time.Duration(g) / time.Second)
	if step <= 0 || time.Duration(g)%time.Second != 0 {
		return nil, fmt.Errorf("chstore: series: granularity %v is not whole seconds", time.Duration(g))
	}
	pts := []analytics.Point{}
	lo, hi := secondsRange(from, to)
	if lo >= hi || adID == "" {
		return pts, nil
	}
	cond, args := where(adID, country, lo, hi)
	q := fmt.Sprintf(`SELECT toUInt64(intDiv(toUInt32(start), %d) * %d) AS b, sum(c), sum(i)
FROM %s GROUP BY b ORDER BY b`, step, step, s.source(cond, "c=clicks", "i=bot + ip_rate"))
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("chstore: series: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var b, c, i uint64
		if err := rows.Scan(&b, &c, &i); err != nil {
			return nil, fmt.Errorf("chstore: series: %w", err)
		}
		pts = append(pts, analytics.Point{Start: time.Unix(int64(b), 0).UTC(), Clicks: int64(c), Invalid: int64(i)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("chstore: series: %w", err)
	}
	return pts, nil
}

// Top implements analytics.Store.
func (s *Store) Top(ctx context.Context, country string, from, to time.Time, limit int) ([]analytics.AdClicks, error) {
	if s.isClosed() {
		return nil, analytics.ErrClosed
	}
	out := []analytics.AdClicks{}
	lo, hi := secondsRange(from, to)
	if lo >= hi || limit <= 0 {
		return out, nil
	}
	cond, args := where("", country, lo, hi)
	q := fmt.Sprintf(`SELECT ad_id, sum(c) AS n FROM %s GROUP BY ad_id HAVING n > 0
ORDER BY n DESC, ad_id ASC LIMIT %d`, s.source(cond, "c=clicks"), limit)
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("chstore: top: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a analytics.AdClicks
		var n uint64
		if err := rows.Scan(&a.AdID, &n); err != nil {
			return nil, fmt.Errorf("chstore: top: %w", err)
		}
		a.Clicks = int64(n)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("chstore: top: %w", err)
	}
	return out, nil
}

// Quality implements analytics.Store.
func (s *Store) Quality(ctx context.Context, adID string, from, to time.Time) (analytics.Quality, error) {
	var q analytics.Quality
	if s.isClosed() {
		return q, analytics.ErrClosed
	}
	lo, hi := secondsRange(from, to)
	if lo >= hi {
		return q, nil
	}
	cond, args := where(adID, "", lo, hi)
	sql := "SELECT sum(c), sum(b), sum(r), sum(d), sum(l) FROM " +
		s.source(cond, "c=clicks", "b=bot", "r=ip_rate", "d=duplicates", "l=too_late")
	var v [5]uint64
	if err := s.conn.QueryRow(ctx, sql, args...).Scan(&v[0], &v[1], &v[2], &v[3], &v[4]); err != nil {
		return q, fmt.Errorf("chstore: quality: %w", err)
	}
	return analytics.Quality{Valid: int64(v[0]), Bot: int64(v[1]), IPRate: int64(v[2]), Duplicates: int64(v[3]), TooLate: int64(v[4])}, nil
}
