package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

const progressInterval = 250 * time.Millisecond

// progress draws a bar on w until ctx is done: events acknowledged out of the
// count when the run is bounded by count alone, else time elapsed out of the
// duration, with the acks so far in the description.
func progress(ctx context.Context, w io.Writer, r *run) {
	o := r.opts
	byCount := o.Duration == 0
	total := o.Duration.Milliseconds()
	if byCount {
		total = o.Count
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionThrottle(progressInterval),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetDescription(o.Transport),
	)
	t := time.NewTicker(progressInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = bar.Finish()
			return
		case <-t.C:
		}
		acked := r.acked.Load()
		elapsed := time.Since(r.sched.start)
		bar.Describe(fmt.Sprintf("%s %s acked, %s/s", o.Transport, si(float64(acked)), si(float64(acked)/elapsed.Seconds())))
		if byCount {
			_ = bar.Set64(min(acked, total))
		} else {
			_ = bar.Set64(min(elapsed.Milliseconds(), total))
		}
	}
}
