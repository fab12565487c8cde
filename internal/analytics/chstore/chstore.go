package chstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/breaker"
)

// Config configures a Store. Zero fields take the defaults in their comments.
type Config struct {
	// DSN of the native protocol, clickhouse://[user:password@]host:9000[/db].
	// Required.
	DSN string
	// Database holds the table; default the DSN's database, else "pedal".
	// It is created if missing.
	Database string
	// Table of window totals ("window_totals"); created if missing.
	Table string
	// SpoolDir holds the totals that could not be inserted. Required.
	SpoolDir string
	// FlushInterval (1s) is the least time between two INSERTs: Upserts that
	// arrive meanwhile share the next one.
	FlushInterval time.Duration
	// MaxSpoolBytes (1 GiB) bounds the spool; beyond it Upsert returns
	// ErrSpoolFull while ClickHouse is unavailable.
	MaxSpoolBytes int64
	// MaxInsertRows (500,000) bounds the spooled rows added to one INSERT
	// when the spool drains.
	MaxInsertRows int
	// InsertTimeout (30s) bounds one INSERT.
	InsertTimeout time.Duration
	// Breaker guards the INSERTs. Its zero fields default to breaker's own
	// defaults except MinCalls (3) and Window (30s): with one INSERT per
	// FlushInterval, breaker's 20 calls would take 20s to trip.
	Breaker breaker.Config
}

func (c Config) withDefaults() (Config, error) {
	if c.DSN == "" {
		return c, errors.New("chstore: DSN missing")
	}
	if c.SpoolDir == "" {
		return c, errors.New("chstore: SpoolDir missing")
	}
	if c.Database == "" {
		if u, err := url.Parse(c.DSN); err == nil && len(u.Path) > 1 {
			c.Database = u.Path[1:]
		} else {
			c.Database = "pedal"
		}
	}
	if c.Table == "" {
		c.Table = "window_totals"
	}
	for _, name := range []string{c.Database, c.Table} {
		if !identifier.MatchString(name) {
			return c, fmt.Errorf("chstore: %q is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)", name)
		}
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.MaxSpoolBytes <= 0 {
		c.MaxSpoolBytes = 1 << 30
	}
	if c.MaxInsertRows <= 0 {
		c.MaxInsertRows = 500_000
	}
	if c.InsertTimeout <= 0 {
		c.InsertTimeout = 30 * time.Second
	}
	if c.Breaker.MinCalls <= 0 {
		c.Breaker.MinCalls = 3
	}
	if c.Breaker.Window <= 0 {
		c.Breaker.Window = 30 * time.Second
	}
	return c, nil
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Store is the ClickHouse analytics.Store; see the package comment.
type Store struct {
	cfg     Config
	logger  *slog.Logger
	conn    driver.Conn
	table   string // `db`.`table`
	insert  string // INSERT INTO ... (columns)
	br      *breaker.Breaker
	spool   *spool // owned by the flusher goroutine once Open returns
	metrics *metrics
	argMax  bool // deduplicate reads with argMax instead of FINAL (benchmarks only)
	ready   bool // the schema exists; owned by the flusher once Open returns

	mu      sync.Mutex
	closed  bool
	queue   []*call // Upserts waiting for the next flush
	version uint64  // the largest version seen or given to a row
	counter uint64  // the counter of UpsertEpoch's versions

	kick chan struct{} // wakes the flusher; capacity 1
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the flusher returns
}

// call is one Upsert waiting for its flush.
type call struct {
	rows []vrow
	done chan error // capacity 1
}

// Open connects to ClickHouse, creates the database and table if missing and
// opens the spool; rows left in the spool by an earlier process flow to
// ClickHouse once it answers. reg may be nil.
func Open(ctx context.Context, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	opts, err := clickhouse.ParseDSN(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("chstore: parse DSN: %w", err)
	}
	// The database may not exist yet: connect to default and qualify every
	// table name.
	opts.Auth.Database = "default"
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("chstore: connect: %w", err)
	}
	s := &Store{
		cfg:    cfg,
		logger: logger,
		conn:   conn,
		table:  fmt.Sprintf("`%s`.`%s`", cfg.Database, cfg.Table),
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	s.insert = "INSERT INTO " + s.table + " (ad_id, country, start, clicks, bot, ip_rate, duplicates, too_late, version)"
	maxVersion, err := s.migrate(ctx)
	switch {
	case err == nil:
		s.ready = true
	case ctx.Err() == nil && unavailable(err):
		// Totals still have a place to go: the flusher creates the schema
		// once ClickHouse answers and spools until then. Versions come from
		// the clock and the spool only.
		logger.Warn("chstore: ClickHouse unavailable at Open; spooling until it answers", "err", err)
	default:
		conn.Close()
		return nil, err
	}
	sp, spoolMax, err := openSpool(cfg.SpoolDir, cfg.MaxSpoolBytes)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("chstore: %w", err)
	}
	s.spool, s.version = sp, max(maxVersion, spoolMax)
	s.metrics = newMetrics(s)
	bc := cfg.Breaker
	onChange := bc.OnStateChange
	bc.OnStateChange = func(from, to breaker.State) {
		s.logger.Warn("chstore: breaker", "from", from.String(), "to", to.String())
		if onChange != nil {
			onChange(from, to)
		}
	}
	s.br = breaker.New(bc)
	if reg != nil {
		if err := reg.Register(s.metrics); err != nil {
			conn.Close()
			return nil, fmt.Errorf("chstore: register metrics: %w", err)
		}
		s.metrics.reg = reg
	}
	go s.run()
	return s, nil
}

// migrate creates the database and table if missing and returns the largest
// version in the table.
func (s *Store) migrate(ctx context.Context) (uint64, error) {
	// Syntax both 18.16 and current releases accept. The sorting key is the
	// replacing key: (ad_id, country, start) with toDate(start) in front, so
	// that time ranges prune granules for Top as ad ids do for Series.
	stmts := []string{
		"CREATE DATABASE IF NOT EXISTS `" + s.cfg.Database + "`",
		"CREATE TABLE IF NOT EXISTS " + s.table + ` (
	ad_id String,
	country String,
	start DateTime('UTC'),
	clicks UInt64,
	bot UInt64,
	ip_rate UInt64,
	duplicates UInt64,
	too_late UInt64,
	version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(start)
ORDER BY (toDate(start), ad_id, country, start)`,
	}
	for _, q := range stmts {
		if err := s.conn.Exec(ctx, q); err != nil {
			return 0, fmt.Errorf("chstore: create schema: %w", err)
		}
	}
	var v uint64
	if err := s.conn.QueryRow(ctx, "SELECT max(version) FROM "+s.table).Scan(&v); err != nil {
		return 0, fmt.Errorf("chstore: read max version: %w", err)
	}
	return v, nil
}

// Upsert queues rows for the next INSERT and waits for it: it returns nil once
// the rows are in ClickHouse, or, when ClickHouse is unavailable, once they are
// synced to the spool. It returns ErrSpoolFull if they are in neither. If ctx
// ends first, rows not yet taken by a flush are withdrawn; rows already taken
// may still be applied (replaying them is harmless: totals are absolute).
func (s *Store) Upsert(ctx context.Context, rows []analytics.Row) error {
	return s.upsert(ctx, rows, func(int) uint64 {
		// The clock, so that a later process's totals win without knowing
		// the table's versions.
		return max(s.version+1, uint64(time.Now().UnixNano()))
	})
}

// epochShift places a writer's epoch above a counter in the versions of
// UpsertEpoch.
const epochShift = 40

// MinEpoch returns an epoch whose writes through UpsertEpoch replace every
// row this store has seen or written so far: the table's and the spool's at
// Open, the wall clock's versions of Upsert, and the epochs of UpsertEpoch.
func (s *Store) MinEpoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.version, uint64(time.Now().UnixNano()))>>epochShift + 1
}

// UpsertEpoch is Upsert for a writer that holds epoch, a fencing token: its
// rows get versions epoch<<40 | a counter, so they replace every row written
// with a lower epoch and are never replaced by one, whenever each arrives. A
// writer that lost its partitions to one with a higher epoch (a zombie) can
// therefore not overwrite its successor's totals. The counter rises with
// every call (2^40 calls: decades at thousands a second), so within an epoch
// the last write of a key wins; within a call, the last row of a key.
func (s *Store) UpsertEpoch(ctx context.Context, epoch uint64, rows []analytics.Row) error {
	if epoch == 0 || epoch >= 1<<(64-epochShift) {
		return fmt.Errorf("chstore: epoch %d out of range", epoch)
	}
	// One version for the call: keep only the last row of each key.
	type key struct {
		ad, country string
		start       int64
	}
	last := make(map[key]int, len(rows))
	for i, r := range rows {
		last[key{r.AdID, r.Country, r.Start.Unix()}] = i
	}
	if len(last) < len(rows) {
		kept := make([]analytics.Row, 0, len(last))
		for i, r := range rows {
			if last[key{r.AdID, r.Country, r.Start.Unix()}] == i {
				kept = append(kept, r)
			}
		}
		rows = kept
	}
	var v uint64
	return s.upsert(ctx, rows, func(i int) uint64 {
		if i == 0 {
			s.counter = (s.counter + 1) & (1<<epochShift - 1)
			v = epoch<<epochShift | s.counter
		}
		return v
	})
}

// upsert queues rows with versions from next, called under s.mu for each row
// in turn, and waits for their flush.
func (s *Store) upsert(ctx context.Context, rows []analytics.Row, next func(i int) uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for i, r := range rows {
		if err := validate(r); err != nil {
			return fmt.Errorf("chstore: upsert row %d: %w", i, err)
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return analytics.ErrClosed
	}
	if len(rows) == 0 {
		s.mu.Unlock()
		return nil
	}
	// Versions rise with the order of the calls and of rows in a call, so
	// the last write of a key wins, in ClickHouse as in the spool.
	c := &call{rows: make([]vrow, len(rows)), done: make(chan error, 1)}
	for i, r := range rows {
		v := next(i)
		s.version = max(s.version, v)
		r.Start = r.Start.UTC()
		c.rows[i] = vrow{Row: r, version: v}
	}
	s.queue = append(s.queue, c)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		s.mu.Lock()
		if i := slices.Index(s.queue, c); i >= 0 {
			s.queue = slices.Delete(s.queue, i, i+1)
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// unavailable reports whether err says ClickHouse could not be reached, as
// opposed to refusing the request (bad credentials, bad SQL).
func unavailable(err error) bool {
	var netErr net.Error
	var opErr *net.OpError
	return errors.As(err, &opErr) || errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded)
}

func validate(r analytics.Row) error {
	switch {
	case r.AdID == "":
		return errors.New("empty ad id")
	case r.Start.Unix() <= 0 || r.Start.Unix() >= 1<<32 || r.Start.Unix()%60 != 0 || r.Start.Nanosecond() != 0:
		return fmt.Errorf("start %v is not a whole minute between 1970 and 2106", r.Start)
	case r.Clicks < 0 || r.Bot < 0 || r.IPRate < 0 || r.Duplicates < 0 || r.TooLate < 0:
		return fmt.Errorf("negative total in %+v", r)
	}
	return nil
}

// run is the flusher: it makes at most one INSERT per FlushInterval, holding
// the queued Upserts and, when the spool has rows, spooled rows up to
// MaxInsertRows.
func (s *Store) run() {
	defer close(s.done)
	tick := time.NewTicker(s.cfg.FlushInterval)
	defer tick.Stop()
	var last time.Time
	for {
		select {
		case <-s.stop:
			s.flush()
			return
		case <-s.kick:
		case <-tick.C:
			if s.spool.rows.Load() == 0 {
				continue
			}
		}
		if wait := time.Until(last.Add(s.cfg.FlushInterval)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-s.stop:
				t.Stop()
				s.flush()
				return
			}
		}
		last = time.Now()
		s.flush()
	}
}

// flush makes one INSERT of the queued calls and some spooled rows; if
// ClickHouse is unavailable, it spools the queued calls' rows instead.
func (s *Store) flush() {
	s.mu.Lock()
	calls := s.queue
	s.queue = nil
	s.mu.Unlock()
	var rows []vrow
	for _, c := range calls {
		rows = append(rows, c.rows...)
	}
	files := s.spool.take(max(0, s.cfg.MaxInsertRows-len(rows)))
	if len(rows) == 0 && len(files) == 0 {
		return
	}
	notify := func(err error) {
		for _, c := range calls {
			c.done <- err
		}
	}
	if done, err := s.br.Allow(); err == nil {
		all := rows
		for _, f := range files {
			spooled, err := s.spool.read(f)
			if err != nil {
				s.logger.Error("chstore: unreadable spool file set aside", "file", f.name, "err", err)
				s.spool.quarantine(f)
				files = nil // the slice aliases the spool's list, which changed
				break
			}
			all = append(all, spooled...)
		}
		err := s.insertRows(all)
		if err == nil {
			done(breaker.Success)
			if len(files) > 0 {
				if err := s.spool.remove(files); err != nil {
					s.logger.Error("chstore: remove drained spool files", "err", err)
				}
				s.logger.Info("chstore: spool drained", "files", len(files), "rows", len(all)-len(rows))
			}
			notify(nil)
			return
		}
		done(breaker.Failure)
		s.logger.Warn("chstore: insert failed; spooling", "rows", len(rows), "err", err)
	}
	if len(rows) == 0 {
		return
	}
	err := s.spool.write(rows)
	if err != nil {
		s.metrics.spoolErrors.Inc()
		s.logger.Error("chstore: spool", "rows", len(rows), "err", err)
	}
	notify(err)
}

// insertRows sends rows in one INSERT, one block, creating the schema first
// if Open could not.
func (s *Store) insertRows(rows []vrow) (err error) {
	s.metrics.inserts.Inc()
	defer func() {
		if err != nil {
			s.metrics.insertErrors.Inc()
		} else {
			s.metrics.insertedRows.Add(float64(len(rows)))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.InsertTimeout)
	defer cancel()
	if !s.ready {
		if _, err := s.migrate(ctx); err != nil {
			return err
		}
		s.ready = true
		s.logger.Info("chstore: schema created after a late start of ClickHouse")
	}
	b, err := s.conn.PrepareBatch(ctx, s.insert)
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer b.Abort()
	for _, r := range rows {
		if err := b.Append(r.AdID, r.Country, r.Start, uint64(r.Clicks), uint64(r.Bot), uint64(r.IPRate),
			uint64(r.Duplicates), uint64(r.TooLate), r.version); err != nil {
			return fmt.Errorf("append row: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}

// Close flushes the queued Upserts (to ClickHouse or the spool) and closes
// the connection. Rows in the spool stay there for the next Open.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	if s.metrics.reg != nil {
		s.metrics.reg.Unregister(s.metrics)
	}
	return s.conn.Close()
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
