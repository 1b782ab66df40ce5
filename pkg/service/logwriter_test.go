package service

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink records what the LogWriter hands to its destination.
type sink struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
	wrote  chan struct{} // one send per Write, if not nil
	gate   chan struct{} // Write waits for it, if not nil
	err    error
}

func (s *sink) Write(p []byte) (int, error) {
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	s.writes++
	if s.err == nil {
		s.b.Write(p)
	}
	err := s.err
	s.mu.Unlock()
	if s.wrote != nil {
		s.wrote <- struct{}{}
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *sink) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func (s *sink) count() int { s.mu.Lock(); defer s.mu.Unlock(); return s.writes }

// manual is a tick source the test fires by hand.
func manual() (chan time.Time, func()) { return make(chan time.Time), func() {} }

func TestLogWriterKeepsEveryLineWholeAndInOrderPerWriter(t *testing.T) {
	s := &sink{}
	tick, stop := manual()
	l := newLogWriter(s, tick, stop, 256, 1024)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(l, "{\"writer\":%d,\"line\":%d,\"pad\":\"%s\"}\n", w, i, strings.Repeat("x", i%40))
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(s.String(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines arrived, want %d", len(got), writers*lines)
	}
	next := make([]int, writers)
	for _, line := range got {
		var w, i int
		if _, err := fmt.Sscanf(line, "{\"writer\":%d,\"line\":%d,", &w, &i); err != nil {
			t.Fatalf("torn line %q", line)
		}
		if want := fmt.Sprintf("{\"writer\":%d,\"line\":%d,\"pad\":\"%s\"}", w, i, strings.Repeat("x", i%40)); line != want {
			t.Fatalf("line %q, want %q", line, want)
		}
		if i != next[w] {
			t.Fatalf("writer %d: line %d arrived before line %d", w, i, next[w])
		}
		next[w]++
	}
	if st := l.Stats(); st.Batches >= writers*lines || st.LostLines != 0 {
		t.Errorf("stats %+v: want batching (fewer writes than lines) and nothing lost", st)
	}
}

func TestLogWriterWritesOnTickNotPerLine(t *testing.T) {
	s := &sink{wrote: make(chan struct{}, 10)}
	tick, stop := manual()
	l := newLogWriter(s, tick, stop, 1<<10, 1<<20)
	defer l.Close()
	for i := range 10 {
		fmt.Fprintf(l, "line %d\n", i)
	}
	if n := s.count(); n != 0 {
		t.Fatalf("%d writes before the tick, want 0: lines must be batched", n)
	}
	tick <- time.Now()
	<-s.wrote
	if n := s.count(); n != 1 {
		t.Fatalf("%d writes after one tick, want 1", n)
	}
	if !strings.HasPrefix(s.String(), "line 0\n") || !strings.HasSuffix(s.String(), "line 9\n") {
		t.Fatalf("wrote %q", s.String())
	}
}

func TestLogWriterWritesWhenBatchIsFull(t *testing.T) {
	s := &sink{wrote: make(chan struct{}, 10)}
	tick, stop := manual() // never fires
	l := newLogWriter(s, tick, stop, 64, 1<<20)
	defer l.Close()
	_, _ = l.Write(bytes.Repeat([]byte("a"), 70))
	<-s.wrote // without any tick
	if got := len(s.String()); got != 70 {
		t.Fatalf("wrote %d bytes, want 70", got)
	}
}

func TestLogWriterFlush(t *testing.T) {
	s := &sink{}
	tick, stop := manual()
	l := newLogWriter(s, tick, stop, 1<<10, 1<<20)
	defer l.Close()
	_, _ = l.Write([]byte("one\n"))
	l.Flush()
	if s.String() != "one\n" {
		t.Fatalf("after Flush the destination holds %q", s.String())
	}
}

// A destination slower than the service makes writers wait: no line is
// dropped and memory stays bounded.
func TestLogWriterBlocksWhenFullAndDropsNothing(t *testing.T) {
	s := &sink{gate: make(chan struct{})}
	tick, stop := manual()
	l := newLogWriter(s, tick, stop, 16, 64)
	line := []byte("0123456789abcdef\n") // 17 bytes: every line fills a batch
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			_, _ = l.Write(line)
		}
	}()
	// The first batch is stuck in the destination; the writer fills the
	// buffer and then has to wait.
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().Waits == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the writer never waited although the destination was stuck and the buffer full")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("all writes returned while the destination was stuck: lines were dropped or memory is unbounded")
	default:
	}
	close(s.gate)
	<-done
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), strings.Repeat(string(line), 20); got != want {
		t.Fatalf("destination got %d bytes, want %d", len(got), len(want))
	}
}

func TestLogWriterCountsLinesLostToWriteErrors(t *testing.T) {
	s := &sink{err: errors.New("broken pipe")}
	tick, stop := manual()
	l := newLogWriter(s, tick, stop, 1<<10, 1<<20)
	_, _ = l.Write([]byte("a\nb\n"))
	l.Flush()
	err := l.Close()
	if err == nil || !strings.Contains(err.Error(), "2 line(s) lost") || !errors.Is(err, s.err) {
		t.Fatalf("Close: %v; want the lost lines counted and the cause wrapped", err)
	}
	if st := l.Stats(); st.LostLines != 2 {
		t.Fatalf("stats %+v, want 2 lost lines", st)
	}
}

func TestLogWriterAfterCloseWritesThrough(t *testing.T) {
	s := &sink{}
	tick, stop := manual()
	l := newLogWriter(s, tick, stop, 1<<10, 1<<20)
	_, _ = l.Write([]byte("before\n"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_, _ = l.Write([]byte("after\n"))
	if s.String() != "before\nafter\n" {
		t.Fatalf("got %q", s.String())
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestNewLogWriterEndsItsGoroutine(t *testing.T) {
	l := NewLogWriter(&sink{}, 10*time.Millisecond)
	_, _ = l.Write([]byte("x\n"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.done:
	default:
		t.Fatal("Close returned before the flushing goroutine ended")
	}
}

func TestLogFlushIntervalSetting(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", DefaultLogFlushInterval, true},
		{"0", 0, true},
		{"250ms", 250 * time.Millisecond, true},
		{"1s", time.Second, true},
		{"2s", 0, false},
		{"-1s", 0, false},
		{"soon-secret", 0, false},
	} {
		got, err := logFlushInterval(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "LOG_FLUSH_INTERVAL") || strings.Contains(err.Error(), tc.in)) {
			t.Errorf("%q: error %q must name the variable and never echo the value", tc.in, err)
		}
	}
}

// Two Close calls at once (say, a signal handler and the normal exit path)
// must not close the stop channel twice.
func TestLogWriterConcurrentClose(t *testing.T) {
	s := &sink{gate: make(chan struct{}), wrote: make(chan struct{}, 4)}
	tick, stop := manual()
	l := newLogWriter(s, tick, stop, 1<<10, 1<<12)
	_, _ = l.Write([]byte("line\n"))
	errs := make(chan error, 2)
	go func() { errs <- l.Close() }()
	// The first Close's final batch is stuck in the destination: the
	// second Close comes while the first is still waiting for it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		pending := l.pending
		l.mu.Unlock()
		if pending > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the final batch never reached the destination")
		}
		time.Sleep(time.Millisecond)
	}
	go func() { errs <- l.Close() }()
	time.Sleep(10 * time.Millisecond) // let the second Close reach the stop channel
	close(s.gate)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := s.String(); got != "line\n" {
		t.Fatalf("destination got %q", got)
	}
}

// An error line is often the last before a crash: it must not wait for the
// next tick, while info lines still do.
func TestLoggerFlushesBatchedLinesAtError(t *testing.T) {
	s := &sink{wrote: make(chan struct{}, 10)}
	tick, stop := manual()
	l := newLogWriter(s, tick, stop, 1<<10, 1<<20)
	defer l.Close()
	log, err := NewLogger(l, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("routine")
	if n := s.count(); n != 0 {
		t.Fatalf("%d writes after an info line, want 0 (batched)", n)
	}
	log.With("k", "v").Error("something broke")
	if got := s.String(); !strings.Contains(got, `"routine"`) || !strings.Contains(got, `"something broke"`) {
		t.Fatalf("after an error line the destination holds %q, want both lines", got)
	}
}
