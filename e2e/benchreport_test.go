package e2e

import (
	"fmt"
	"image/color"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var endpointOrder = []string{nHello, nTwoHop, nProtected, nPublic}

// Goals of issue 10, checked at c=64 in the same run.
const (
	goalRatio = 0.85
	goalRSSMB = 30.0
)

func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
}

func thousands(f float64) string {
	s := fmt.Sprintf("%.0f", f)
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	return b.String()
}

// ratio is the median over rounds of num's req/s over den's in the same
// round: a burst of other work on the machine spoils one round's ratio, not
// the figure. lo and hi are the extreme rounds.
func (r *benchResult) ratio(num, den string, conc int) float64 {
	m, _, _ := r.ratioRange(num, den, conc)
	return m
}

func (r *benchResult) ratioRange(num, den string, conc int) (med, lo, hi float64) {
	a, b := r.cell(num, conc), r.cell(den, conc)
	if a == nil || b == nil || len(a.rounds) != len(b.rounds) || len(a.rounds) == 0 {
		return 0, 0, 0
	}
	v := make([]float64, 0, len(a.rounds))
	for i := range a.rounds {
		if b.rounds[i] > 0 {
			v = append(v, a.rounds[i]/b.rounds[i])
		}
	}
	if len(v) == 0 {
		return 0, 0, 0
	}
	slices.Sort(v)
	med = v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return med, v[0], v[len(v)-1]
}

// cpuRatio is den's total CPU per request over num's: the throughput ratio
// on CPUs that nothing else uses.
func (r *benchResult) cpuRatio(num, den string, conc int) float64 {
	a, b := r.cell(num, conc), r.cell(den, conc)
	if a == nil || b == nil || a.totalCPUPerReq() == 0 {
		return 0
	}
	return b.totalCPUPerReq() / a.totalCPUPerReq()
}

func (c *cellResult) totalCPUPerReq() float64 {
	t := 0.0
	for k := range c.cpu {
		t += c.cpuPerReq(k)
	}
	return t
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// serverCPU names the CPU each server process spent per request.
func (c *cellResult) serverCPU() string {
	var names []string
	for k := range c.cpu {
		if k != "loadgen" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var parts []string
	total := 0.0
	for _, n := range names {
		v := c.cpuPerReq(n)
		total += v
		parts = append(parts, fmt.Sprintf("%s %.0f", shortName(n), v))
	}
	if len(parts) == 1 {
		return fmt.Sprintf("%.0f", total)
	}
	return fmt.Sprintf("%.0f (%s)", total, strings.Join(parts, " + "))
}

func shortName(n string) string {
	switch n {
	case "public-gateway":
		return "gw"
	case "protected-data":
		return "pd"
	case "twohop-front":
		return "front"
	case "twohop-back":
		return "back"
	}
	return n
}

func (r *benchResult) markdown() string {
	var b strings.Builder
	gen := "raw keep-alive HTTP/1.1 client in the test process (wrk's method)"
	switch r.cfg.client {
	case "nethttp":
		gen = "Go net/http client in the test process"
	case "wrk":
		gen = "wrk 1 thread (percentiles: median of the rounds; bodies not checked)"
	}
	fmt.Fprintf(&b, "`make bench`, %s, %s, %s. Load generator: %s, sharing the CPUs with the servers. "+
		"Services as shipped (JSON logs at info, one line per request; logs to %s; %s). "+
		"%d interleaved rounds of %s per cell.\n\n",
		r.when.Format("2006-01-02 15:04 UTC"), r.machine, r.goVersion, gen, logDestText(r.cfg.logDest), r.metrics, r.cfg.rounds, r.cfg.cell)

	b.WriteString("| endpoint | c | req/s | p50 | p90 | p99 | max | errors | server CPU µs/req | loadgen CPU µs/req |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n")
	for _, conc := range concurrencies {
		for _, name := range endpointOrder {
			c := r.cell(name, conc)
			if c == nil {
				continue
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %d | %s | %.0f |\n",
				name, conc, thousands(c.rps()), ms(c.lat.p50), ms(c.lat.p90), ms(c.lat.p99), ms(c.lat.max),
				c.tally.errCount(), c.serverCPU(), c.cpuPerReq("loadgen"))
		}
	}

	if r.cfg.variant != "" {
		fmt.Fprintf(&b, "\n[B]: a second protected-data + gateway pair run with `%s`.\n", r.cfg.variant)
	}
	b.WriteString("\nRatios: the median over rounds of each round's ratio (the two sides run back to back), with the lowest and highest round in brackets.\n")
	b.WriteString("\n| ratio, same run | c=1 | c=16 | c=64 | goal at c=64 |\n|---|---:|---:|---:|---|\n")
	rows := [][2]string{{nPublic, nTwoHop}, {nProtected, nHello}, {nTwoHop, nHello}, {nPublic, nHello}}
	if r.cfg.variant != "" {
		rows = append(rows, [2]string{nPublic + " [B]", nTwoHop}, [2]string{nProtected + " [B]", nHello})
	}
	for _, rr := range rows {
		fmt.Fprintf(&b, "| %s / %s |", rr[0], rr[1])
		for _, conc := range concurrencies {
			m, lo, hi := r.ratioRange(rr[0], rr[1], conc)
			fmt.Fprintf(&b, " %.2f (%.2f-%.2f) |", m, lo, hi)
		}
		if rr == [2]string{nPublic, nTwoHop} || rr == [2]string{nProtected, nHello} {
			v := r.ratio(rr[0], rr[1], 64)
			fmt.Fprintf(&b, " >= %.2f: %s |\n", goalRatio, met(v >= goalRatio))
		} else {
			b.WriteString(" |\n")
		}
	}

	// The same ratios from CPU per request (servers + load generator):
	// what the ratio would be with the CPUs to ourselves. Other work on the
	// machine moves req/s; it moves CPU per request much less.
	for _, rr := range [][2]string{{nPublic, nTwoHop}, {nProtected, nHello}} {
		fmt.Fprintf(&b, "| %s / %s, from CPU per request |", rr[0], rr[1])
		for _, conc := range concurrencies {
			fmt.Fprintf(&b, " %.2f |", r.cpuRatio(rr[0], rr[1], conc))
		}
		b.WriteString(" |\n")
	}

	b.WriteString("\n| process | peak RSS (VmHWM) |\n|---|---:|\n")
	for _, x := range r.rss {
		fmt.Fprintf(&b, "| %s | %.1f MB |\n", x.name, x.mb)
	}
	fmt.Fprintf(&b, "\nIdP calls during the run above: %d token request(s), %d JWKS fetch(es) "+
		"(the gateway's token and the bench's own for the protected rows were fetched before it).\n", r.tokenCalls, r.jwksReq)

	b.WriteString(countersText(r.gwCounters, r.pdCounters))
	if rn := r.renewal; rn != nil {
		fmt.Fprintf(&b, "\nRenewal run: public-gateway at c=%d for %s with %s tokens: %s requests, %d errors; "+
			"%d token fetches for %d renewals (one every %s), %d refused by protected-data. "+
			"A renewal window runs from the token request's arrival at the IdP to %s after its answer.\n\n",
			r.cfg.renewalConc, time.Duration(rn.secs*float64(time.Second)).Round(100*time.Millisecond), r.cfg.renewalToken, thousands(float64(rn.requests)), rn.errs,
			rn.tokenFetches, rn.renewals, rn.period.Round(10*time.Millisecond), rn.refused, renewalPad)
		b.WriteString(countersText(rn.gwCounters, rn.pdCounters))
		b.WriteString("| public-gateway, c=16 | requests | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n")
		fmt.Fprintf(&b, "| during renewal windows | %d | %s | %s | %s | %s |\n", rn.nDuring, ms(rn.during.p50), ms(rn.during.p90), ms(rn.during.p99), ms(rn.during.max))
		fmt.Fprintf(&b, "| between renewals | %d | %s | %s | %s | %s |\n", rn.nBetween, ms(rn.between.p50), ms(rn.between.p90), ms(rn.between.p99), ms(rn.between.max))
		fmt.Fprintf(&b, "| (windows, part 1: while the IdP answers) | %d | %s | %s | %s | %s |\n", rn.nFetching, ms(rn.fetching.p50), ms(rn.fetching.p90), ms(rn.fetching.p99), ms(rn.fetching.max))
		fmt.Fprintf(&b, "| (windows, part 2: the %s after) | %d | %s | %s | %s | %s |\n", renewalPad, rn.nAfter, ms(rn.after.p50), ms(rn.after.p90), ms(rn.after.p99), ms(rn.after.max))
		if rn.tokenFetches > 0 {
			fmt.Fprintf(&b, "\nThe emulator (the IdP, on the same CPUs here) used %.1f ms of CPU per token request.\n", float64(rn.emuCPU.Microseconds())/1e3/float64(rn.tokenFetches))
		}
	}

	b.WriteString("\n| goal (issue 10) | measured | |\n|---|---|---|\n")
	v := r.ratio(nPublic, nTwoHop, 64)
	fmt.Fprintf(&b, "| public >= %.2fx bare two-hop, c=64 | %.2fx | %s |\n", goalRatio, v, met(v >= goalRatio))
	v = r.ratio(nProtected, nHello, 64)
	fmt.Fprintf(&b, "| protected >= %.2fx hello-world, c=64 | %.2fx | %s |\n", goalRatio, v, met(v >= goalRatio))
	if rn := r.renewal; rn != nil {
		fmt.Fprintf(&b, "| p99 during renewal <= between | %s vs %s | %s |\n", ms(rn.during.p99), ms(rn.between.p99), met(rn.during.p99 <= rn.between.p99))
	}
	worst := rssRow{}
	for _, x := range append(append([]rssRow{}, r.rss...), r.renewalRSS()...) {
		if isService(x.name) && x.mb > worst.mb {
			worst = x
		}
	}
	fmt.Fprintf(&b, "| RSS <= %.0f MB per service | %.1f MB (%s, highest) | %s |\n", goalRSSMB, worst.mb, worst.name, met(worst.mb <= goalRSSMB))
	return b.String()
}

func (r *benchResult) renewalRSS() []rssRow {
	if r.renewal == nil {
		return nil
	}
	return r.renewal.rss
}

func isService(name string) bool {
	return name == "public-gateway" || name == "protected-data" || name == "wristband-emulator"
}

func logDestText(d string) string {
	switch d {
	case "pipe":
		return "a pipe read by the test process"
	case "null":
		return "/dev/null"
	}
	return "a file"
}

// chart draws throughput and p99 by endpoint and concurrency, and the
// renewal run's latency over time with the token fetches marked.
func (r *benchResult) chart(path string) error {
	rps, err := r.barPlot("requests per second (same run)", "req/s", func(c *cellResult) float64 { return c.rps() })
	if err != nil {
		return err
	}
	p99, err := r.barPlot("p99 latency", "ms", func(c *cellResult) float64 { return float64(c.lat.p99) / 1e6 })
	if err != nil {
		return err
	}
	row := []*plot.Plot{rps, p99}
	if r.renewal != nil {
		rp, err := r.renewalPlot()
		if err != nil {
			return err
		}
		row = append(row, rp)
	}
	const h = 5 * vg.Inch
	w := vg.Length(len(row)) * 5.5 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 2,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	cs := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for j, p := range row {
		p.Draw(cs[0][j])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (r *benchResult) barPlot(title, unit string, val func(*cellResult) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = unit
	p.Legend.Top = true
	w := vg.Points(14)
	for i, conc := range concurrencies {
		vals := make(plotter.Values, len(endpointOrder))
		for j, name := range endpointOrder {
			if c := r.cell(name, conc); c != nil {
				vals[j] = val(c)
			}
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return nil, err
		}
		bars.LineStyle.Width = 0
		bars.Color = plotutil.Color(i)
		bars.Offset = vg.Length(i-1) * w
		p.Add(bars)
		p.Legend.Add(fmt.Sprintf("c=%d", conc), bars)
	}
	p.NominalX(endpointOrder...)
	// Headroom for the legend above the tallest bar.
	p.Y.Min = 0
	p.Y.Max *= 1.3
	return p, nil
}

// renewalPlot shows the p99 of each 250 ms of the renewal run, with a line
// at every token fetch.
func (r *benchResult) renewalPlot() (*plot.Plot, error) {
	rn := r.renewal
	p := plot.New()
	p.Title.Text = fmt.Sprintf("renewal run: public c=%d, %s tokens", r.cfg.renewalConc, r.cfg.renewalToken)
	p.X.Label.Text = "s"
	p.Y.Label.Text = "p99 per 250 ms, ms"
	const bucket = int64(250 * time.Millisecond)
	buckets := map[int64][]int64{}
	var last int64
	for _, s := range rn.series {
		k := s.start / bucket
		buckets[k] = append(buckets[k], s.dur)
		last = max(last, k)
	}
	pts := make(plotter.XYs, 0, last+1)
	ymax := 0.0
	for k := int64(0); k <= last; k++ {
		if len(buckets[k]) == 0 {
			continue
		}
		y := float64(summarise(buckets[k]).p99) / 1e6
		ymax = max(ymax, y)
		pts = append(pts, plotter.XY{X: float64(k*bucket) / 1e9, Y: y})
	}
	line, err := plotter.NewLine(pts)
	if err != nil {
		return nil, err
	}
	line.Color = plotutil.Color(2)
	p.Add(line)
	p.Legend.Add("p99", line)
	for i, w := range rn.windows {
		x := float64(w[0]) / 1e9
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: ymax}})
		if err != nil {
			return nil, err
		}
		l.Color = color.RGBA{R: 150, G: 150, B: 150, A: 255}
		l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		p.Add(l)
		if i == 0 {
			p.Legend.Add("token fetch", l)
		}
	}
	p.Legend.Top = true
	p.Y.Min = 0
	p.Y.Max *= 1.2
	return p, nil
}

// countersText states what the services' own counters saw, or nothing when
// they serve no metrics.
func countersText(gw, pd map[string]float64) string {
	if gw == nil || pd == nil {
		return ""
	}
	return fmt.Sprintf("Services' own counters (/metrics) over the same span: gateway token fetches %.0f, renewals %.0f, "+
		"invalidations %.0f, callers that waited for a token %.0f; protected-data JWKS fetches %.0f, "+
		"signature verifications %.0f, verified-token cache misses %.0f.\n\n",
		gw["m2m_token_fetches_total"], gw["m2m_token_renewals_total"], gw["m2m_token_invalidations_total"],
		gw["m2m_token_waits_total"], pd["jwtauth_jwks_fetches_total"], pd["jwtauth_signature_verifications_total"],
		pd["jwtauth_cache_misses_total"])
}
