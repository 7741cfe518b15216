// pause-mmu: Go's side of `pause --churn` (benches/src/bin/pause.rs), the
// same shape in Go, for a side-by-side reading of pauses and minimum
// mutator utilisation (MMU).
//
// Two goroutines each own half of a live heap of binary trees of 16-byte
// nodes (depth 16, as pause.rs builds them). Each loops: allocate one
// 16-byte node of garbage; every 16th iteration, swap a random child
// subtree of one of its trees' roots with one of another's. Every 1024
// iterations it stamps the time. MMU over a window of w is, as in pause.rs,
// the fewest stamps any window of w holds over what the goroutine's best
// 100 ms window held in as long, worst over the goroutines. Pauses come
// from runtime.MemStats.PauseNs (every stop of each cycle).
//
//	go build && GOMAXPROCS=2 ./pausemmu -live 100 -secs 10
package main

import (
	"flag"
	"fmt"
	"math"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type node struct{ l, r *node }

func tree(d int) *node {
	if d == 0 {
		return &node{}
	}
	return &node{tree(d - 1), tree(d - 1)}
}

const (
	treeDepth  = 16
	stampEvery = 1024
)

var sink atomic.Pointer[node]

func churn(trees []*node, seed uint64, t0 time.Time, stop *int32) []int64 {
	stamps := make([]int64, 0, 1<<20)
	rng := 0x9e3779b97f4a7c15 ^ seed
	for i := uint64(0); atomic.LoadInt32(stop) == 0; i++ {
		sink.Store(&node{}) // garbage: the next store drops it
		if i%16 == 0 && len(trees) >= 2 {
			rng ^= rng << 13
			rng ^= rng >> 7
			rng ^= rng << 17
			a := trees[rng%uint64(len(trees))]
			b := trees[(rng>>32)%uint64(len(trees))]
			pa, pb := &a.l, &b.l
			if rng>>8&1 == 1 {
				pa = &a.r
			}
			if rng>>9&1 == 1 {
				pb = &b.r
			}
			*pa, *pb = *pb, *pa
		}
		if (i+1)%stampEvery == 0 {
			stamps = append(stamps, int64(time.Since(t0)))
		}
	}
	return stamps
}

func bestCount(s []int64, w int64) int {
	best, hi := 0, 0
	for lo, t := range s {
		for hi < len(s) && s[hi] < t+w {
			hi++
		}
		if hi-lo > best {
			best = hi - lo
		}
	}
	return best
}

func mmu(s []int64, w int64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	best := float64(bestCount(s, 100_000_000)) / 100e6
	first, last := s[0], s[len(s)-1]
	if best == 0 || last-first < w {
		return math.NaN()
	}
	worst, hi := math.Inf(1), 0
	for lo, t := range s {
		if t+w > last {
			break
		}
		for hi < len(s) && s[hi] <= t+w {
			hi++
		}
		worst = math.Min(worst, float64(hi-lo-1)/(float64(w)*best))
	}
	return math.Min(worst, 1)
}

func main() {
	liveMiB := flag.Int("live", 100, "live heap in MiB (16-byte nodes), split between the goroutines")
	workers := flag.Int("workers", 2, "churning goroutines")
	secs := flag.Float64("secs", 10, "seconds of churn")
	flag.Parse()
	treeBytes := ((1 << (treeDepth + 1)) - 1) * 16
	per := (*liveMiB<<20 + 2*treeBytes - 1) / (2 * treeBytes)
	if per < 1 {
		per = 1
	}
	owned := make([][]*node, *workers)
	for w := range owned {
		for k := 0; k < per; k++ {
			owned[w] = append(owned[w], tree(treeDepth))
		}
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var stop int32
	var wg sync.WaitGroup
	stamps := make([][]int64, *workers)
	t0 := time.Now()
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			stamps[w] = churn(owned[w], uint64(w+1), t0, &stop)
		}(w)
	}
	time.Sleep(time.Duration(*secs * float64(time.Second)))
	atomic.StoreInt32(&stop, 1)
	wg.Wait()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	n := int(ms.NumGC - before.NumGC)
	if n > 256 {
		n = 256
	}
	var p []uint64
	for i := 0; i < n; i++ {
		p = append(p, ms.PauseNs[(int(ms.NumGC)-1-i+256)%256])
	}
	sort.Slice(p, func(i, j int) bool { return p[i] < p[j] })
	worst := func(w int64) float64 {
		m := math.Inf(1)
		for _, s := range stamps {
			m = math.Min(m, mmu(s, w))
		}
		return m
	}
	if len(p) == 0 {
		fmt.Println("no collections")
		return
	}
	q := func(f float64) float64 { return float64(p[int(f*float64(len(p)-1))]) / 1000 }
	// Iterations (one 16-byte node allocated each): 1024 a stamp.
	iters := 0
	for _, s := range stamps {
		iters += 1024 * len(s)
	}
	fmt.Printf("pause-mmu go=%s live=%dMiB workers=%d: %d GCs, pause p50_us=%.1f p99_us=%.1f max_us=%.1f, MMU 1ms=%.2f 10ms=%.2f 100ms=%.2f, Miters=%.1f\n",
		runtime.Version(), *liveMiB, *workers, ms.NumGC-before.NumGC, q(0.5), q(0.99), float64(p[len(p)-1])/1000,
		worst(1_000_000), worst(10_000_000), worst(100_000_000), float64(iters)/1e6)
}
