package service

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkAccessLogLine is the cost of one request's log line, as the
// services write it (slog JSON, seven attributes), by destination and with
// or without the batching LogWriter. The pipe's reader is a goroutine here
// (a log collector would be another process, a costlier wake-up).
func BenchmarkAccessLogLine(b *testing.B) {
	dests := []struct {
		name string
		open func(b *testing.B) io.Writer
	}{
		{"devnull", func(b *testing.B) io.Writer {
			f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { f.Close() })
			return f
		}},
		{"file", func(b *testing.B) io.Writer {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { f.Close() })
			return f
		}},
		{"pipe", func(b *testing.B) io.Writer {
			r, w, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go func() { defer close(done); _, _ = io.Copy(io.Discard, r) }()
			b.Cleanup(func() { w.Close(); <-done; r.Close() })
			return w
		}},
	}
	for _, d := range dests {
		for _, batched := range []bool{false, true} {
			name := d.name + "/sync"
			if batched {
				name = d.name + "/batched"
			}
			b.Run(name, func(b *testing.B) {
				var w io.Writer = d.open(b)
				if batched {
					lw := NewLogWriter(w, DefaultLogFlushInterval)
					b.Cleanup(func() { _ = lw.Close() })
					w = lw
				}
				log := slog.New(slog.NewJSONHandler(w, nil))
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						log.LogAttrs(b.Context(), slog.LevelInfo, "request",
							slog.String("method", "GET"), slog.String("path", "/api/protected/data"),
							slog.Int("status", 200), slog.Duration("latency", 123456*time.Nanosecond),
							slog.String("request_id", "0fd7bd2a9604f1af84123681"), slog.String("remote_ip", "127.0.0.1"),
							slog.String("client_id", "e2e-client"))
					}
				})
			})
		}
	}
}
