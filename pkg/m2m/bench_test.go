package m2m

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// The cached path, side by side with x/oauth2's clientcredentials token
// source (a ReuseTokenSource) on the same fake endpoint:
//
//	cd pkg && go test -run '^$' -bench . -benchmem ./m2m/
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
	cc := (&clientcredentials.Config{ClientID: testClientID, ClientSecret: testClientSecret, TokenURL: srv.URL}).
		TokenSource(context.WithValue(ctx, oauth2.HTTPClient, srv.Client()))
	if _, err := cc.Token(); err != nil {
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
	b.Run("oauth2/serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cc.Token(); err != nil {
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
	b.Run("oauth2/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := cc.Token(); err != nil {
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
