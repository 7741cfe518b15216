// gc-parked: Go's side of `stw-latency --runtime goroutines --kernel spin
// --threads 2 --probe collect --parked N` (benches/src/bin/stw-latency.rs):
// garbage collections while N goroutines are parked, each holding a short
// chain of objects on its stack, and 2 goroutines spin in loops without
// calls. Each collection is runtime.GC(), 1 ms apart; its pause is
// runtime.MemStats.PauseNs, which Go documents as the sum of every
// stop-the-world pause of that cycle (its two stops). Go scans goroutine
// stacks concurrently, each before it runs again, as pardon's deferral
// does.
//
//	go build && GOMAXPROCS=2 ./gcparked -parked 100000 -cycles 30
package main

import (
	"flag"
	"fmt"
	"runtime"
	"sort"
	"time"
)

type node struct {
	next *node
	val  int
}

var sink int

func main() {
	parked := flag.Int("parked", 100000, "parked goroutines")
	cycles := flag.Int("cycles", 100, "collections")
	flag.Parse()
	block := make(chan struct{})
	for i := 0; i < *parked; i++ {
		go func(i int) {
			a := &node{val: i}
			b := &node{next: a, val: i + 1}
			c := &node{next: b}
			d := &node{next: c}
			<-block
			sink += d.next.next.next.val
		}(i)
	}
	stop := make(chan struct{})
	for i := 0; i < 2; i++ {
		go func() {
			x := 0
			for {
				select {
				case <-stop:
					sink += x
					return
				default:
				}
				for j := 0; j < 1000000; j++ {
					x += j
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.NumGC
	var pauses []float64
	var cycleTimes []float64
	for i := 0; i < *cycles; i++ {
		t0 := time.Now()
		runtime.GC()
		cycleTimes = append(cycleTimes, float64(time.Since(t0).Microseconds()))
		time.Sleep(time.Millisecond)
	}
	runtime.ReadMemStats(&ms)
	n := int(ms.NumGC - base)
	if n > 256 {
		n = 256
	}
	for k := 0; k < n; k++ {
		idx := (int(ms.NumGC) - 1 - k + 256) % 256
		pauses = append(pauses, float64(ms.PauseNs[idx])/1000)
	}
	sort.Float64s(pauses)
	sort.Float64s(cycleTimes)
	q := func(v []float64, p float64) float64 { return v[int(p*float64(len(v)-1))] }
	fmt.Printf("go parked=%d cycles=%d pause(both stops) p50 %.1f p99 %.1f max %.1f us; cycle p50 %.1f us\n",
		*parked, n, q(pauses, 0.5), q(pauses, 0.99), pauses[len(pauses)-1], q(cycleTimes, 0.5))
	close(stop)
	close(block)
}
