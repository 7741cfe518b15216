// stuck: Go's side of `goroutines --mode stuck` (benches/src/bin/goroutines/stuck.rs).
// Goroutine A wakes goroutine B (a channel send: B goes to A's P's
// runnext), then blocks its thread in poll(2) on a pipe that only B
// writes. How long B waits from the wake-up to running is the time Go
// takes to get it off A's P: another M stealing it (wakep, a spinning M),
// or sysmon's retake of the P of a goroutine in a system call (at least
// 20 µs) handing it to another M.
//
//	go build && GOMAXPROCS=2 ./stuck -samples 1000
package main

import (
	"flag"
	"fmt"
	"runtime"
	"sort"
	"syscall"
	"time"
	"unsafe"
)

type pollfd struct {
	fd      int32
	events  int16
	revents int16
}

const pollin = 0x1

// pollReadable blocks in poll(2), a system call Go enters through
// entersyscall, until fd is readable or limit has passed.
func pollReadable(fd int, limit time.Duration) {
	end := time.Now().Add(limit)
	for {
		left := time.Until(end)
		if left <= 0 {
			return
		}
		p := pollfd{fd: int32(fd), events: pollin}
		ms := left.Milliseconds()
		if ms < 1 {
			ms = 1
		}
		n, _, _ := syscall.Syscall(syscall.SYS_POLL, uintptr(unsafe.Pointer(&p)), 1, uintptr(ms))
		if int(n) > 0 {
			return
		}
	}
}

func main() {
	samples := flag.Int("samples", 1000, "rounds")
	limit := flag.Duration("timeout", 100*time.Millisecond, "longest a round's poll waits")
	flag.Parse()
	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		panic(err)
	}
	wake := make(chan time.Time)
	parked := make(chan struct{})
	waits := make(chan []time.Duration)
	go func() {
		var w []time.Duration
		buf := []byte{'x'}
		for {
			parked <- struct{}{}
			sent, ok := <-wake
			if !ok {
				break
			}
			w = append(w, time.Since(sent))
			syscall.Write(fds[1], buf)
		}
		waits <- w
	}()
	buf := make([]byte, 1)
	for i := 0; i < *samples; i++ {
		<-parked
		// Let B reach its receive, so the send below wakes it.
		time.Sleep(50 * time.Microsecond)
		wake <- time.Now()
		pollReadable(fds[0], *limit)
		syscall.Read(fds[0], buf)
	}
	close(wake)
	<-parked
	w := <-waits
	sort.Slice(w, func(i, j int) bool { return w[i] < w[j] })
	q := func(p float64) float64 { return float64(w[int(p*float64(len(w)-1))].Nanoseconds()) / 1000 }
	stalled := 0
	for _, d := range w {
		if d >= *limit {
			stalled++
		}
	}
	fmt.Printf("stuck go GOMAXPROCS=%s: %d rounds, woken goroutine waited p50_us=%.1f p99_us=%.1f max_us=%.1f; %d waited out the %v limit\n",
		gomaxprocs(), len(w), q(0.5), q(0.99), q(1), stalled, *limit)
}

func gomaxprocs() string {
	return fmt.Sprint(runtime.GOMAXPROCS(0))
}
