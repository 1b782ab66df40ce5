package service

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// LogWriter batches log lines in memory and writes them to the underlying
// writer from one goroutine: when a batch reaches FlushSize, every Interval,
// and on Flush or Close. A service under load then makes one write(2) per
// batch instead of one per request, which on a pipe (what a container's
// stdout is) also spares the log reader a wake-up per line.
//
// It never drops a line: when a buffer is full (256 KiB waiting while the
// previous batch is still being written: the destination is slower than the
// service), Write blocks until that batch is written, which is what a
// synchronous write would have done anyway. Two fixed buffers: no garbage
// per line, bounded memory. A write
// error of the destination loses that batch; the lines lost are counted
// (Stats) and the first error is returned by Close.
//
// Each Write call is kept whole (slog handlers write one record per call),
// so lines from concurrent requests never interleave.
type LogWriter struct {
	w         io.Writer
	flushSize int
	max       int

	mu      sync.Mutex
	space   *sync.Cond // signalled when a batch has been written
	buf     []byte     // waiting
	spare   []byte     // the previous batch's storage, reused
	pending int        // bytes handed to the flusher and not yet written
	closed  bool
	err     error

	kick    chan struct{} // buffer reached flushSize, or Flush asked
	flushed chan struct{} // closed and replaced after each written batch
	stop    chan struct{}
	stopped sync.Once // closes stop: Close may run more than once, concurrently
	done    chan struct{}

	waits, lostLines, batches atomic.Uint64
}

// LogWriterStats are cheap to read, for metrics.
type LogWriterStats struct {
	Batches   uint64 // write(2) calls made
	Waits     uint64 // Writes that waited for room (destination slower than the service)
	LostLines uint64 // lines in batches the destination refused
}

// Defaults of NewLogWriter.
const (
	DefaultLogFlushInterval = 100 * time.Millisecond
	defaultLogFlushSize     = 32 << 10
	defaultLogMaxBuffered   = 256 << 10 // per buffer; two buffers
)

// NewLogWriter starts the flushing goroutine; Close ends it. interval <= 0
// takes DefaultLogFlushInterval.
func NewLogWriter(w io.Writer, interval time.Duration) *LogWriter {
	if interval <= 0 {
		interval = DefaultLogFlushInterval
	}
	t := time.NewTicker(interval)
	return newLogWriter(w, t.C, t.Stop, defaultLogFlushSize, defaultLogMaxBuffered)
}

// newLogWriter takes the tick source so that tests drive time.
func newLogWriter(w io.Writer, tick <-chan time.Time, stopTick func(), flushSize, max int) *LogWriter {
	l := &LogWriter{
		w: w, flushSize: flushSize, max: max,
		// Both buffers at full size from the start: appends never
		// reallocate, so batching adds no garbage per line.
		buf:   make([]byte, 0, max),
		spare: make([]byte, 0, max),
		kick:  make(chan struct{}, 1), flushed: make(chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	l.space = sync.NewCond(&l.mu)
	go l.run(tick, stopTick)
	return l
}

// Write queues p. It blocks only while the buffer is full.
func (l *LogWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		// After Close (shutdown messages of a service that is exiting):
		// straight through.
		return l.w.Write(p)
	}
	waited := false
	for len(l.buf) > 0 && len(l.buf)+len(p) > l.max && !l.closed {
		if !waited {
			l.waits.Add(1)
			waited = true
		}
		l.signal()
		l.space.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		return l.w.Write(p)
	}
	l.buf = append(l.buf, p...)
	if len(l.buf) >= l.flushSize {
		l.signal()
	}
	l.mu.Unlock()
	return len(p), nil
}

func (l *LogWriter) signal() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *LogWriter) run(tick <-chan time.Time, stopTick func()) {
	defer close(l.done)
	defer stopTick()
	for {
		select {
		case <-l.kick:
		case <-tick:
		case <-l.stop:
			l.flushOnce()
			return
		}
		l.flushOnce()
	}
}

// flushOnce writes what is waiting, outside the lock, so that writers keep
// appending meanwhile.
func (l *LogWriter) flushOnce() {
	l.mu.Lock()
	b := l.buf
	if len(b) == 0 {
		ch := l.flushed
		l.flushed = make(chan struct{})
		l.mu.Unlock()
		close(ch)
		return
	}
	if l.spare == nil {
		l.spare = make([]byte, 0, l.max)
	}
	l.buf, l.spare = l.spare[:0], nil
	l.pending = len(b)
	l.mu.Unlock()

	_, err := l.w.Write(b)
	l.batches.Add(1)
	if err != nil {
		l.lostLines.Add(uint64(countLines(b)))
	}

	l.mu.Lock()
	if err != nil && l.err == nil {
		l.err = err
	}
	// Reuse the storage, unless one oversized line made it grow.
	if cap(b) <= l.max {
		l.spare = b[:0]
	} else {
		l.spare = make([]byte, 0, l.max)
	}
	l.pending = 0
	ch := l.flushed
	l.flushed = make(chan struct{})
	l.space.Broadcast()
	l.mu.Unlock()
	close(ch)
}

func countLines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	if n == 0 && len(b) > 0 {
		n = 1
	}
	return n
}

// Flush returns once everything written before the call has been handed to
// the destination.
func (l *LogWriter) Flush() {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return
		}
		empty := len(l.buf) == 0 && l.pending == 0
		ch := l.flushed
		l.mu.Unlock()
		if empty {
			return
		}
		l.signal()
		select {
		case <-ch:
		case <-l.done:
			return
		}
	}
}

// Close writes what is waiting, ends the goroutine and returns the first
// write error, if any. Later Writes go straight to the destination. It may
// be called more than once, also concurrently.
func (l *LogWriter) Close() error {
	l.mu.Lock()
	if l.closed {
		err := l.err
		l.mu.Unlock()
		return err
	}
	l.mu.Unlock()
	l.stopped.Do(func() { close(l.stop) })
	<-l.done
	// Lines written after the goroutine's last batch go out here, under the
	// lock, before any Write that finds the writer closed.
	l.mu.Lock()
	if l.closed { // a concurrent Close got here first
		err := l.err
		l.mu.Unlock()
		return err
	}
	l.closed = true
	if rest := l.buf; len(rest) > 0 {
		l.buf = nil
		if _, err := l.w.Write(rest); err != nil {
			l.lostLines.Add(uint64(countLines(rest)))
			if l.err == nil {
				l.err = err
			}
		}
	}
	l.space.Broadcast()
	err := l.err
	l.mu.Unlock()
	if n := l.lostLines.Load(); err != nil {
		return fmt.Errorf("log output: %d line(s) lost: %w", n, err)
	}
	return nil
}

// Stats reports batches, waits and lost lines so far.
func (l *LogWriter) Stats() LogWriterStats {
	return LogWriterStats{Batches: l.batches.Load(), Waits: l.waits.Load(), LostLines: l.lostLines.Load()}
}

// The process's log output: stderr through one LogWriter, shared by the
// logger Load builds and closed by Main when run returns.
var (
	stderrOnce sync.Once
	stderrLW   *LogWriter
	stderrOut  io.Writer = os.Stderr
	stderrErr  error
)

// errLogFlushInterval names the setting and a valid value, never echoing it.
var errLogFlushInterval = errors.New("LOG_FLUSH_INTERVAL: want a duration between 0 (write each line at once) and 1s, e.g. 100ms")

// logOutput returns where service logs go: stderr, batched unless
// LOG_FLUSH_INTERVAL=0.
func logOutput() (io.Writer, error) {
	stderrOnce.Do(func() {
		interval, err := logFlushInterval(os.Getenv("LOG_FLUSH_INTERVAL"))
		if err != nil || interval == 0 {
			stderrErr = err
			return
		}
		stderrLW = NewLogWriter(os.Stderr, interval)
		stderrOut = stderrLW
	})
	return stderrOut, stderrErr
}

// logFlushInterval parses LOG_FLUSH_INTERVAL: empty is the default, 0 means
// no batching. Beyond 1s a crash would lose too much.
func logFlushInterval(v string) (time.Duration, error) {
	if v == "" {
		return DefaultLogFlushInterval, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > time.Second {
		return 0, errLogFlushInterval
	}
	return d, nil
}

// LogOutputStats reports the process log writer's counters (zero when
// logs are written line by line).
func LogOutputStats() LogWriterStats {
	if stderrLW == nil {
		return LogWriterStats{}
	}
	return stderrLW.Stats()
}

// closeLogOutput flushes the process's log writer; Main calls it before
// printing a last error line and exiting.
func closeLogOutput() {
	if stderrLW != nil {
		if err := stderrLW.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
}
