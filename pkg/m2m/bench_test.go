package m2m

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The cached path, serial and parallel:
//
//	cd pkg && go test -run '^$' -bench . -benchmem ./m2m/
//
// The comparison with x/oauth2's clientcredentials token source lives in
// the bench module (../../bench), so that pkg does not depend on x/oauth2.
func BenchmarkCachedToken(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeToken(w, "tok-bench", 3600)
	}))
	defer srv.Close()
	ctx := context.Background()

	s, err := New(Config{TokenURL: srv.URL, ClientID: testClientID, ClientSecret: testClientSecret, HTTPClient: srv.Client()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Token(ctx); err != nil {
		b.Fatal(err)
	}

	b.Run("m2m/serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Token(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("m2m/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Token(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	if st := s.Stats(); st.Fetches != 1 {
		b.Errorf("m2m fetched %d times, want 1", st.Fetches)
	}
}
