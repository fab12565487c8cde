package pebblelog

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/eventlog/eventlogtest"
)

// stallFS wraps a crashable in-memory FS; while armed, every sync of a WAL file
// blocks until released, so a test can crash the "machine" between write and sync.
type stallFS struct {
	*vfs.MemFS
	mu       sync.Mutex
	armed    bool
	release  chan struct{}
	stalled  chan struct{} // receives when a sync starts blocking
	stallOne sync.Once
	failSync atomic.Bool
}

func newStallFS() *stallFS {
	return &stallFS{MemFS: vfs.NewCrashableMem(), release: make(chan struct{}), stalled: make(chan struct{})}
}

func (fs *stallFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return &stallFile{File: f, fs: fs}, nil
}

func (fs *stallFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.MemFS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *stallFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.MemFS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

func (fs *stallFS) wait() {
	fs.mu.Lock()
	armed := fs.armed
	fs.mu.Unlock()
	if armed {
		fs.stallOne.Do(func() { close(fs.stalled) })
		<-fs.release
	}
}

func (fs *stallFS) arm() {
	fs.mu.Lock()
	fs.armed = true
	fs.mu.Unlock()
}

type stallFile struct {
	vfs.File
	fs *stallFS
}

func (f *stallFile) Sync() error { return f.sync(f.File.Sync) }

func (f *stallFile) SyncData() error { return f.sync(f.File.SyncData) }

func (f *stallFile) SyncTo(n int64) (bool, error) {
	if err := f.sync(func() error { return nil }); err != nil {
		return false, err
	}
	return f.File.SyncTo(n)
}

func (f *stallFile) sync(do func() error) error {
	f.fs.wait()
	if f.fs.failSync.Load() {
		return errors.New("injected sync failure")
	}
	return do()
}

type memLog struct {
	*Log
	fs *stallFS
}

func openMem(t *testing.T, fs *stallFS) *memLog {
	t.Helper()
	l, err := Open("/db", Config{FS: fs, MinFreeBytes: -1}, nil, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return &memLog{l, fs}
}

func TestConformance(t *testing.T) {
	eventlogtest.Run(t, eventlogtest.Harness{
		Open: func(t *testing.T) eventlogtest.Log { return openMem(t, newStallFS()) },
		Reopen: func(t *testing.T, l eventlogtest.Log) eventlogtest.Log {
			m := l.(*memLog)
			if err := m.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return openMem(t, m.fs)
		},
		CrashDuringSync: func(t *testing.T, l eventlogtest.Log, start, whileStalled func()) eventlogtest.Log {
			m := l.(*memLog)
			if start != nil {
				m.fs.arm()
				start()
				select {
				case <-m.fs.stalled:
				case <-time.After(10 * time.Second):
					t.Fatal("no WAL sync started")
				}
				whileStalled()
			}
			crashed := m.fs.MemFS.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
			close(m.fs.release)
			m.Close() // the old process is gone; its result does not matter
			fs := newStallFS()
			fs.MemFS = crashed
			return openMem(t, fs)
		},
	})
}

func TestOnDisk(t *testing.T) {
	eventlogtest.Run(t, eventlogtest.Harness{
		Open: func(t *testing.T) eventlogtest.Log {
			l, err := Open(t.TempDir(), Config{MinFreeBytes: -1}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
	})
}

func TestFullDiskRefusesAppends(t *testing.T) {
	fs := newStallFS()
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 1 << 20, TotalBytes: 1 << 30})
	l, err := Open("/db", Config{FS: fs, MinFreeBytes: 64 << 20}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.CreateTopic(t.Context(), "t", 1); err != nil {
		t.Fatal(err)
	}
	err = l.Append(t.Context(), "t", []eventlog.Record{{Value: []byte("x")}})
	if !errors.Is(err, eventlog.ErrFull) {
		t.Fatalf("Append with 1 MiB free of a 64 MiB minimum: got %v, want ErrFull", err)
	}
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 1 << 30, TotalBytes: 2 << 30})
	l.checkDisk()
	if err := l.Append(t.Context(), "t", []eventlog.Record{{Value: []byte("x")}}); err != nil {
		t.Fatalf("Append once space is back: %v", err)
	}
}

func TestRetention(t *testing.T) {
	ctx := t.Context()
	now := time.UnixMilli(1_000_000_000_000)
	clock := func() time.Time { return now }
	l, err := Open("/db", Config{FS: vfs.NewMem(), MinFreeBytes: -1, RetentionAge: time.Hour, Now: clock}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.CreateTopic(ctx, "t", 1); err != nil {
		t.Fatal(err)
	}
	appendN := func(n int) {
		recs := make([]eventlog.Record, n)
		if err := l.Append(ctx, "t", recs); err != nil {
			t.Fatal(err)
		}
	}
	appendN(3) // offsets 0-2, appended at now
	now = now.Add(30 * time.Minute)
	appendN(2) // offsets 3-4
	now = now.Add(45 * time.Minute)
	appendN(1) // offset 5

	// A consumer group at offset 1 holds everything from 1 on: nothing whole goes.
	if err := l.CommitOffset(ctx, "slow", "t", 0, 1); err != nil {
		t.Fatal(err)
	}
	if n, err := l.ApplyRetention(ctx); err != nil || n != 0 {
		t.Fatalf("retention with a group at 1 deleted %d, %v; want 0", n, err)
	}
	// Once it has passed the first batch, that batch (older than an hour) goes; the
	// second is only 45 minutes old and stays.
	if err := l.CommitOffset(ctx, "slow", "t", 0, 6); err != nil {
		t.Fatal(err)
	}
	if n, err := l.ApplyRetention(ctx); err != nil || n != 3 {
		t.Fatalf("retention deleted %d, %v; want 3", n, err)
	}
	if start, end, _ := l.Offsets(ctx, "t", 0); start != 3 || end != 6 {
		t.Errorf("offsets after retention = [%d, %d), want [3, 6)", start, end)
	}
	if _, err := l.Fetch(ctx, "t", 0, 2, 1); !errors.Is(err, eventlog.ErrOffsetOutOfRange) {
		t.Errorf("Fetch of a deleted offset: got %v, want ErrOffsetOutOfRange", err)
	}
	rs, err := l.Fetch(ctx, "t", 0, 3, 10)
	if err != nil || len(rs) != 3 || rs[0].Offset != 3 {
		t.Errorf("Fetch(3) after retention = %d records, %v", len(rs), err)
	}
}

func TestCloseWakesReaders(t *testing.T) {
	l, err := Open("/db", Config{FS: vfs.NewMem(), MinFreeBytes: -1}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.CreateTopic(t.Context(), "t", 1); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := l.Fetch(context.Background(), "t", 0, 0, 1)
		errc <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("Fetch blocked across Close: got %v, want ErrClosed", err)
	}
	if err := l.Append(t.Context(), "t", []eventlog.Record{{}}); !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("Append after Close: got %v, want ErrClosed", err)
	}
}

func TestGroupCommitSharesOneSync(t *testing.T) {
	fs := newStallFS()
	l := openMem(t, fs)
	defer l.Close()
	if err := l.CreateTopic(t.Context(), "t", 4); err != nil {
		t.Fatal(err)
	}
	fs.arm()
	const followers = 20
	errs := make(chan error, followers+1)
	go func() { errs <- l.Append(t.Context(), "t", []eventlog.Record{{Partition: 0}}) }()
	<-fs.stalled // the first append leads a group of one and waits for its sync
	for i := range followers {
		go func() { errs <- l.Append(t.Context(), "t", []eventlog.Record{{Partition: int32(i % 4)}}) }()
	}
	for { // wait until all followers queue behind the stalled sync
		l.qmu.Lock()
		n := len(l.queue)
		l.qmu.Unlock()
		if n == followers {
			break
		}
		runtime.Gosched()
	}
	close(fs.release)
	for range followers + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(l.m.commits); got != 2 {
		t.Errorf("%d appends made %v commits, want 2 (one group behind the stalled sync)", followers+1, got)
	}
	var total int64
	for p := range int32(4) {
		_, end, _ := l.Offsets(t.Context(), "t", p)
		total += end
	}
	if total != followers+1 {
		t.Errorf("%d records readable, want %d", total, followers+1)
	}
}

func TestFailedSyncIsFatalAndReleasesWaiters(t *testing.T) {
	fs := newStallFS()
	fatal := make(chan string, 4)
	l, err := Open("/db", Config{FS: fs, MinFreeBytes: -1, Fatal: func(msg string) {
		fatal <- msg
		runtime.Goexit() // must not return; the test goroutine carries on elsewhere
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.CreateTopic(t.Context(), "t", 1); err != nil {
		t.Fatal(err)
	}
	fs.failSync.Store(true)
	done := make(chan error, 1)
	go func() {
		defer func() { done <- errors.New("leader stopped") }()
		l.Append(t.Context(), "t", []eventlog.Record{{}})
	}()
	select {
	case msg := <-fatal:
		if !strings.Contains(msg, "sync") {
			t.Errorf("Fatal(%q), want it to name the sync", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a failed WAL sync did not call Fatal")
	}
	<-done
	if _, end, _ := l.Offsets(t.Context(), "t", 0); end != 0 {
		t.Errorf("a record whose sync failed became readable (end offset %d)", end)
	}
	// Leadership was handed on: a later append does not hang (it fails too,
	// Pebble keeps the error, or calls Fatal again).
	go func() {
		defer func() { done <- nil }()
		l.Append(t.Context(), "t", []eventlog.Record{{}})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("an append after a failed group hung")
	}
}

func TestCloseRacingAppends(t *testing.T) {
	l := openMem(t, newStallFS())
	if err := l.CreateTopic(t.Context(), "t", 2); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for {
				err := l.Append(t.Context(), "t", []eventlog.Record{{Partition: int32(i % 2)}})
				if err != nil {
					if !errors.Is(err, eventlog.ErrClosed) {
						t.Errorf("Append racing Close: %v, want nil or ErrClosed", err)
					}
					return
				}
			}
		})
	}
	for { // let some appends through first
		if _, end, _ := l.Offsets(t.Context(), "t", 0); end > 20 {
			break
		}
		runtime.Gosched()
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	ctx := t.Context()
	if _, err := l.Fetch(ctx, "t", 0, 0, 1); !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("Fetch after Close: %v, want ErrClosed", err)
	}
	if err := l.CommitOffset(ctx, "g", "t", 0, 1); !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("CommitOffset after Close: %v, want ErrClosed", err)
	}
	if err := l.CreateTopic(ctx, "u", 1); !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("CreateTopic after Close: %v, want ErrClosed", err)
	}
}

func TestRetentionKeepsUnconsumedAndSurvivesReopen(t *testing.T) {
	ctx := t.Context()
	now := time.UnixMilli(1_000_000_000_000)
	fs := vfs.NewMem()
	open := func() *Log {
		l, err := Open("/db", Config{FS: fs, MinFreeBytes: -1, RetentionAge: time.Hour, Now: func() time.Time { return now }}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := open()
	if err := l.CreateTopic(ctx, "t", 1); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, "t", make([]eventlog.Record, 3)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if n, err := l.ApplyRetention(ctx); err != nil || n != 0 {
		t.Fatalf("retention with no consumer group deleted %d, %v; want 0", n, err)
	}
	if err := l.CommitOffset(ctx, "g", "t", 0, 3); err != nil {
		t.Fatal(err)
	}
	if n, err := l.ApplyRetention(ctx); err != nil || n != 3 {
		t.Fatalf("retention after the group passed everything deleted %d, %v; want 3", n, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open()
	defer l.Close()
	if start, end, _ := l.Offsets(ctx, "t", 0); start != 3 || end != 3 {
		t.Errorf("emptied partition reopened at [%d, %d), want [3, 3)", start, end)
	}
	r := []eventlog.Record{{}}
	if err := l.Append(ctx, "t", r); err != nil || r[0].Offset != 3 {
		t.Errorf("first append after reopening an emptied partition got offset %d, %v; want 3", r[0].Offset, err)
	}
}
