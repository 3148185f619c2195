package uplink

import (
	"sync"
	"time"
)

// laneScan bounds how many log records laneLag reads to count one lane's.
const laneScan = 4096

// lagRecount is how long a lane's count is carried on from the records
// already read: after it, the lane is counted from its cursor again (records
// the buffer's pressure levels removed since drop out of the count).
const lagRecount = 5 * time.Second

// lagCache keeps, per lane, what laneLag has counted from the lane's cursor,
// so that a lane that stays behind (its records held back, or a sink
// offline) is not read again from its cursor at every status or metrics
// request: a request reads only the records appended since the last one.
type lagCache struct {
	mu    sync.Mutex
	lanes map[Lane]*laneCount
}

// laneCount: the lane's records in [next, pos) number lag, read records
// (of every lane) from next on; counted since at.
type laneCount struct {
	next, pos uint64
	lag       uint64
	read      int
	at        time.Time
}

// laneLag counts the records of lane from next to durable. With one lane,
// every record is the lane's; otherwise at most laneScan records from next
// on are read, and a count that stops there is a lower bound (atLeast). The
// count goes on from where the last one for the same cursor stopped.
func (s *Syncer) laneLag(lane Lane, next, durable uint64) (lag uint64, atLeast bool) {
	if next >= durable {
		return 0, false
	}
	if len(s.lanes) == 1 {
		return durable - next, false
	}
	s.lag.mu.Lock()
	defer s.lag.mu.Unlock()
	if s.lag.lanes == nil {
		s.lag.lanes = map[Lane]*laneCount{}
	}
	c := s.lag.lanes[lane]
	if c == nil || c.next != next || c.pos > durable || time.Since(c.at) > lagRecount {
		c = &laneCount{next: next, pos: next, at: time.Now()}
		s.lag.lanes[lane] = c
	}
	if c.read < laneScan && c.pos < durable {
		r := s.log.NewReader(c.pos)
		for c.read < laneScan {
			off, p, err := r.Next()
			if err != nil || off >= durable {
				break
			}
			c.read++
			c.pos = off + 1
			s.stats.lagReads.Add(1)
			if l, _, ok := s.opts.Lanes.classify(off, p, lane); ok && l == lane {
				c.lag++
			}
		}
		r.Close()
	}
	return c.lag, c.read >= laneScan && c.pos < durable
}
