package bench

import (
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// engineColors are the bar colours, by engine in order of first appearance.
var engineColors = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"}

// SVG layout, in pixels.
const (
	svgWidth     = 900
	svgLeft      = 150 // row labels
	svgRight     = 24
	svgRowH      = 22
	svgBarH      = 16
	svgGroupGap  = 8
	svgPad       = 6
	svgCharWidth = 6.5 // of 11px sans-serif, roughly, to fit value labels
)

// EnginesSVG writes a self-contained SVG chart of results: durable append
// records/s per engine and run on a log scale, with the reference ranges as
// shaded bands behind the bars; under it three small linear panels for read
// records/s, restart to ready and disk bytes per record.
func EnginesSVG(w io.Writer, results []EngineResult, reference []ReferenceRange) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	names := engineNames(results)
	color := func(engine string) string {
		for i, n := range names {
			if n == engine {
				return engineColors[i%len(engineColors)]
			}
		}
		return engineColors[0]
	}

	// Rows: one per result, grouped by engine in order of first appearance.
	type row struct {
		r     EngineResult
		label string
		y     float64 // top of the row, relative to the plot's top
	}
	var rows []row
	y := float64(svgPad)
	for gi, name := range names {
		if gi > 0 {
			y += svgGroupGap
		}
		var runs []EngineResult
		for _, r := range results {
			if r.Engine == name {
				runs = append(runs, r)
			}
		}
		for _, r := range runs {
			label := name
			if len(runs) > 1 {
				label = fmt.Sprintf("%s #%d", name, r.Run)
			}
			rows = append(rows, row{r: r, label: label, y: y})
			y += svgRowH
		}
	}
	plotH := y + svgPad
	plotL, plotR := float64(svgLeft), float64(svgWidth-svgRight)
	plotW := plotR - plotL

	// Log scale over whole decades covering the bars and the references.
	lo, hi := math.Inf(1), 0.0
	for _, r := range results {
		if r.AppendPerSec > 0 {
			lo, hi = min(lo, r.AppendPerSec), max(hi, r.AppendPerSec)
		}
	}
	for _, ref := range reference {
		lo, hi = min(lo, ref.Low), max(hi, ref.Low*2, ref.High)
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1e3, 1e6
	}
	d0 := math.Floor(math.Log10(lo))
	d1 := max(math.Ceil(math.Log10(hi*1.5)), d0+1)
	xOf := func(v float64) float64 {
		if v <= 0 {
			return plotL
		}
		f := (math.Log10(v) - d0) / (d1 - d0)
		return plotL + min(max(f, 0), 1)*plotW
	}

	top := 100.0 // the append plot's top
	panel2 := top + plotH + 70
	height := panel2 + 24 + plotH + 44

	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%.0f" viewBox="0 0 %d %.0f" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n",
		svgWidth, height, svgWidth, height)
	p(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	p(`<text x="16" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", esc("holdfast bench engines: durable append, records/s"))
	if len(results) > 0 {
		r0 := results[0]
		p(`<text x="16" y="42" fill="#555">%s</text>`+"\n", esc(fmt.Sprintf(
			"%s records of %d bytes per engine, %d appenders × batches of %d; every Append returns once fsync'd.",
			group(int64(r0.Records)), r0.PayloadBytes, r0.Appenders, r0.Batch)))
	}
	if len(reference) > 0 {
		p(`<text x="16" y="58" fill="#555">%s</text>`+"\n", esc("Shaded bands: the writes/s the design seed expects of each storage tier."))
	}

	// Reference bands, behind everything.
	for i, ref := range reference {
		x0 := xOf(ref.Low)
		x1 := plotR
		if ref.High > 0 {
			x1 = xOf(ref.High)
		}
		shade := []string{"#d9d9d9", "#c7d7e8", "#d5e8c7"}[i%3]
		p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.6"/>`+"\n", x0, top, x1-x0, plotH, shade)
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888" stroke-dasharray="3,3"/>`+"\n", x0, top-4, x0, top+plotH)
		if ref.High > 0 {
			p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888" stroke-dasharray="3,3"/>`+"\n", x1, top-4, x1, top+plotH)
		}
		cx, anchor := (x0+x1)/2, "middle"
		if ref.High == 0 {
			cx, anchor = x0+4, "start"
		}
		p(`<text x="%.1f" y="%.1f" font-size="11" text-anchor="%s" fill="#333">%s</text>`+"\n", cx, top-20, anchor, esc(ref.Label))
		p(`<text x="%.1f" y="%.1f" font-size="11" text-anchor="%s" fill="#333">%s</text>`+"\n", cx, top-7, anchor, esc(ref.rangeText()))
	}

	// Grid and axis: decades labelled, 2× and 5× lighter.
	for d := d0; d <= d1; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if d == d1 && m > 1 {
				break
			}
			x := xOf(v)
			stroke := "#e4e4e4"
			if m == 1 {
				stroke = "#bbbbbb"
			}
			p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, top, x, top+plotH, stroke)
			if m == 1 {
				p(`<text x="%.1f" y="%.1f" text-anchor="middle" fill="#333">%s</text>`+"\n", x, top+plotH+16, esc(si(v)))
			}
		}
	}
	p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", plotL, top+plotH, plotR, top+plotH)
	p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", plotL, top, plotL, top+plotH)
	p(`<text x="%.1f" y="%.1f" text-anchor="middle" fill="#333">%s</text>`+"\n", plotL+plotW/2, top+plotH+34,
		esc("durable appends, records/s (log scale)"))

	// Append bars with their values.
	for _, rw := range rows {
		by := top + rw.y + (svgRowH-svgBarH)/2
		p(`<text x="%.1f" y="%.1f" text-anchor="end" font-weight="bold">%s</text>`+"\n", plotL-8, by+svgBarH-4, esc(rw.label))
		x := xOf(rw.r.AppendPerSec)
		p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="%s"/>`+"\n", plotL, by, x-plotL, svgBarH, color(rw.r.Engine))
		valueLabel(&b, si(rw.r.AppendPerSec)+"/s", x, plotL, plotR, by)
	}

	// Small panels: read/s, restart, bytes/record, on linear scales.
	type panel struct {
		title string
		value func(EngineResult) float64
		text  func(float64) string
	}
	panels := []panel{
		{"read, records/s", func(r EngineResult) float64 { return r.ReadPerSec }, func(v float64) string { return si(v) + "/s" }},
		{"restart to ready, ms", func(r EngineResult) float64 { return float64(r.Restart) / 1e6 }, fmtMs},
		{"disk bytes per record", func(r EngineResult) float64 { return r.DiskBytesPerRecord }, func(v float64) string { return fmt.Sprintf("%.1f B", v) }},
	}
	const gap = 24.0
	pw := (plotW - 2*gap) / 3
	ptop := panel2 + 24
	for _, rw := range rows {
		p(`<text x="%.1f" y="%.1f" text-anchor="end" font-weight="bold">%s</text>`+"\n", plotL-8,
			ptop+rw.y+(svgRowH-svgBarH)/2+svgBarH-4, esc(rw.label))
	}
	for i, pn := range panels {
		x0 := plotL + float64(i)*(pw+gap)
		maxV := 0.0
		for _, r := range results {
			maxV = max(maxV, pn.value(r))
		}
		span := pw - 70 // room for the value after the longest bar
		p(`<text x="%.1f" y="%.1f" font-weight="bold">%s</text>`+"\n", x0, panel2+12, esc(pn.title))
		p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#f7f7f7"/>`+"\n", x0, ptop, pw, plotH)
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", x0, ptop, x0, ptop+plotH)
		for _, rw := range rows {
			v := pn.value(rw.r)
			wd := 0.0
			if maxV > 0 {
				wd = max(v, 0) / maxV * span
			}
			by := ptop + rw.y + (svgRowH-svgBarH)/2
			p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="%s"/>`+"\n", x0, by, wd, svgBarH, color(rw.r.Engine))
			valueLabel(&b, pn.text(v), x0+wd, x0, x0+pw, by)
		}
	}
	p(`<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555" font-size="11">%s</text>`+"\n", plotL+plotW/2, ptop+plotH+18,
		esc("linear scales from 0; read right after the appends (mostly page cache); restart = Open + first record"))
	p("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// valueLabel prints text after a bar ending at x, or inside its end when it
// would cross right; the bar starts at left.
func valueLabel(b *strings.Builder, text string, x, left, right, barY float64) {
	tw := float64(len([]rune(text))) * svgCharWidth
	ty := barY + svgBarH - 4
	if x+4+tw <= right || x-left < tw+8 {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="11" fill="#222">%s</text>`+"\n", x+4, ty, esc(text))
		return
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end" fill="#ffffff" font-weight="bold">%s</text>`+"\n", x-4, ty, esc(text))
}

// esc escapes s for XML text and attribute values.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
