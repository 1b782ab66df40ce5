package bench

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/m2m"
)

// BenchmarkCachedToken: pkg/m2m's cached path side by side with x/oauth2's
// clientcredentials token source (a ReuseTokenSource), on the same fake
// token endpoint. (pkg/m2m keeps its own benchmarks; this is the
// comparison, moved here so that pkg does not depend on x/oauth2.)
func BenchmarkCachedToken(b *testing.B) {
	const id, secret = "bench client", "s3cr3t:p@ss/word"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-bench", "token_type": "Bearer", "expires_in": 3600})
	}))
	defer srv.Close()
	ctx := context.Background()

	s, err := m2m.New(m2m.Config{TokenURL: srv.URL, ClientID: id, ClientSecret: secret, HTTPClient: srv.Client()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Token(ctx); err != nil {
		b.Fatal(err)
	}
	cc := (&clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: srv.URL}).
		TokenSource(context.WithValue(ctx, oauth2.HTTPClient, srv.Client()))
	if _, err := cc.Token(); err != nil {
		b.Fatal(err)
	}
	serial := func(tok func() error) func(*testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := tok(); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	parallel := func(tok func() error) func(*testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := tok(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
	}
	ours := func() error { _, err := s.Token(ctx); return err }
	theirs := func() error { _, err := cc.Token(); return err }
	b.Run("m2m/serial", serial(ours))
	b.Run("oauth2/serial", serial(theirs))
	b.Run("m2m/parallel", parallel(ours))
	b.Run("oauth2/parallel", parallel(theirs))
	if st := s.Stats(); st.Fetches != 1 {
		b.Errorf("m2m fetched %d times, want 1", st.Fetches)
	}
}
