// Package m2m provides an OAuth 2.0 client-credentials token source for
// machine-to-machine calls: a cached token that, in steady state, never makes
// a request wait or fail.
//
// Build one TokenSource per client with New, call Start so that the first
// token is fetched and later ones are renewed in the background, and Close it
// on shutdown. Token(ctx) returns the cached token lock-free; Attach wires the
// source into a resty client (token set per request, one retry after a 401).
//
// It fits Wristband as is and any standard OAuth 2.0 server through Scopes,
// EndpointParams (audience, resource, ...) and AuthMethod: client_secret_basic
// (the default), client_secret_post, or private_key_jwt, where a short client
// assertion signed with the client's own key (jwx) replaces the secret. With
// none of these set the request is exactly "grant_type=client_credentials"
// with Basic credentials.
//
// Behaviour in short:
//
//   - One fetch at a time: any number of concurrent callers without a usable
//     token cause exactly one token request and share its outcome, success
//     or error. Each caller's context is honoured while it waits.
//   - A token is never handed out with less than Margin of life left (half
//     its lifetime for tokens living under twice the margin), the expiry
//     being counted from when the request was sent.
//   - The refresher renews at a uniformly jittered point in [70%, 85%] of the
//     usable life (lifetime minus margin); the first token, and any token
//     fetched after failures or Invalidate, renews in [7.5%, 85%], so that a
//     fleet started or recovering together does not renew in lockstep. If
//     renewal fails the current token keeps serving until its margin while
//     retries go on with jittered exponential backoff (MinBackoff..MaxBackoff)
//     on network errors, 5xx, 408 and 429 (Retry-After honoured).
//   - Without a usable token, Token waits (at most MaxWait) only while no
//     failure is known: the first token, or after Invalidate. Once a request
//     has failed it answers at once with an *UnavailableError whose RetryIn
//     says when the next request is due (RetryAfter gives the header value),
//     so a request never hangs on a failing IdP.
//   - Any other 4xx (invalid_client, invalid_grant, ...) and a redirect from
//     the token endpoint are permanent: an *OAuthError (or a redirect error),
//     returned at once and by Ready, retried in the background from 2 s
//     doubling to MaxBackoff.
//   - While requests fail and callers ask (Token or Ready), one more attempt
//     is made at most every RetryInterval (2 s): a client fixed at the IdP is
//     noticed within seconds, and a bad client never costs more than one
//     request per RetryInterval however heavy the traffic.
//   - The cause of a failure is logged once per change and then at most once
//     a minute while it lasts; a refused connection in the first 10 s (an IdP
//     still starting) is Info, not Warn.
//   - Invalidate(token) after a 401 drops the token only if it is still the
//     cached one, so N concurrent 401s cause one new fetch. After the first
//     invalidation, later ones in a row drop only tokens older than a guard
//     doubling from MinBackoff to MaxBackoff, so a resource server that
//     refuses every token costs one fetch per guard, not one per request.
//   - The client secret in every form (raw, URL-encoded, Basic/base64), the
//     client assertion, the private key and tokens never appear in errors,
//     logs or spans. Redirects from the token endpoint are refused.
//   - Stats counts fetches by outcome, renewals and invalidations; each token
//     request is an OpenTelemetry span "m2m.fetch_token" (a no-op until a
//     TracerProvider is installed).
//
// # The margin
//
// DefaultMargin is 30 s. It must cover three things: the whole-second
// truncation of exp by the IdP (up to 1 s: the reference demo, which has no
// margin, sent expired tokens at the expiry boundary for this reason alone),
// clock skew between this host and the resource server that checks exp with
// zero leeway (well under a second with NTP, seconds without), and the time a
// request carrying the token may take to reach the resource server, retries
// included (the gateway's downstream timeout is 5 s). 10 s (x/oauth2) covers
// that only barely for slow downstream calls; 60 s (Wristband .NET) buys
// nothing more. The margin costs no extra fetches, because renewal happens at
// 70-85% of the usable life anyway; it only shortens how long an IdP outage is
// bridged by the last token (4.4 to 8.9 minutes of a 30-minute Wristband token,
// depending on where the jittered renewal fell). For a token living less than twice the margin, half its lifetime is
// used instead (logged once as a warning), so short-lived test tokens still
// work.
//
// expires_in is capped at 24 h: longer is a unit bug on the server or a token
// not worth trusting that long; the token is then merely renewed sooner.
// Token responses are limited to 64 KiB.
//
// # Performance
//
// The cached path is one atomic load and one monotonic clock read: no lock,
// no allocation. Against golang.org/x/oauth2/clientcredentials (whose
// ReuseTokenSource takes a mutex and reads the wall clock) on the same fake
// endpoint, 2-core AMD EPYC VM, Go 1.26, median of 5 runs:
//
//	cd bench && go test -run '^$' -bench CachedToken -benchmem -count 5 .
//
//	                        m2m            x/oauth2        ratio
//	serial                  25.6 ns/op     61.9 ns/op      2.4x faster
//	RunParallel (2 cores)   12.9 ns/op     68.5 ns/op      5.3x faster
//	allocations             0 B/op, 0      0 B/op, 0
//
// Beyond speed, x/oauth2 holds its mutex during the fetch and does not share
// errors (N waiters on a failing endpoint make N requests), has no
// background renewal, no retry, and no way to drop a refused token.
package m2m
