package m2m

import (
	"context"
	"net/http"

	"github.com/go-resty/resty/v2"
)

// OnBeforeRequest is a resty request middleware that puts the current token
// on the request (never on the client: client setters race with requests in
// flight). resty runs it again before each retry, so a retried request
// carries a fresh token. Its error satisfies errors.Is(err,
// ErrTokenUnavailable) as returned by the request's Get, Post, etc.
func (s *TokenSource) OnBeforeRequest(_ *resty.Client, r *resty.Request) error {
	tok, err := s.Token(r.Context())
	if err != nil {
		return err
	}
	r.SetAuthScheme("Bearer")
	r.SetAuthToken(tok)
	return nil
}

// retried401 marks, in a request's context, that it was already retried
// once after a 401. A context value is the only per-request storage resty
// offers that survives between attempts, and it costs nothing until a 401.
type retried401 struct{}

// RetryOn401 is a resty retry condition: on a 401 to a request that carried a
// token from s, it invalidates exactly that token and asks for one retry, at
// most once per request whatever the retry count (which the caller's other
// conditions share). Other responses and errors return false, leaving the
// decision to any other condition.
func (s *TokenSource) RetryOn401(resp *resty.Response, _ error) bool {
	if resp == nil || resp.Request == nil || resp.StatusCode() != http.StatusUnauthorized {
		return false
	}
	req := resp.Request
	if req.Token == "" || req.Context().Value(retried401{}) != nil {
		return false
	}
	s.Invalidate(req.Token)
	req.SetContext(context.WithValue(req.Context(), retried401{}, true))
	return true
}

// Attach wires s into c: OnBeforeRequest as a request middleware, RetryOn401
// as a retry condition, and a retry count of at least 1.
//
// Mind resty v2's retry rules: once any retry condition is set, conditions
// alone decide, so c no longer retries transport errors by default; add a
// condition of your own for that. The retry count is shared by all
// conditions. Request bodies given as an io.Reader cannot be replayed.
func (s *TokenSource) Attach(c *resty.Client) {
	c.OnBeforeRequest(s.OnBeforeRequest)
	c.AddRetryCondition(s.RetryOn401)
	if c.RetryCount < 1 {
		c.SetRetryCount(1)
	}
}
