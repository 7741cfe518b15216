//! Task words and task sources: a stopped thread reports the task word
//! its code last stored; a stopped world reports every suspended task of
//! every source added to its registry, and none of a removed one; adding
//! or removing waits for a stop in progress.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use pardon_preempt::{Registry, SuspendedTask, TaskSource};

/// A test double: fixed "tasks" whose stacks are plain buffers, and a
/// count of the calls made to it.
struct Fake {
    stacks: Vec<[usize; 16]>,
    calls: AtomicUsize,
}

// SAFETY: every reported range is a buffer this value owns and never
// writes after construction; every "task" is reported once per call.
unsafe impl TaskSource for Fake {
    unsafe fn for_each_suspended(&self, f: &mut dyn FnMut(&SuspendedTask<'_>)) {
        self.calls.fetch_add(1, SeqCst);
        for (i, s) in self.stacks.iter().enumerate() {
            let lo = s.as_ptr() as usize;
            let hi = lo + std::mem::size_of_val(s);
            f(&SuspendedTask {
                stack: (lo, hi),
                sp: lo + 8 * i,
                registers: &[],
                word: 1000 + i,
            });
        }
    }
}

fn fake(n: usize) -> Arc<Fake> {
    Arc::new(Fake {
        stacks: vec![[0usize; 16]; n],
        calls: AtomicUsize::new(0),
    })
}

#[test]
fn a_stopped_world_reports_every_source_until_it_is_removed() {
    let reg = Registry::new(Default::default()).unwrap();
    let a = fake(3);
    let b = fake(2);
    let ia = reg.add_task_source(a.clone());
    let _ib = reg.add_task_source(b.clone());
    let mut seen = Vec::new();
    {
        let w = reg.stop_the_world().unwrap();
        assert_eq!(w.task_sources(), 2);
        w.for_each_suspended(|t| seen.push((t.word, t.sp - t.stack.0)));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![(1000, 0), (1000, 0), (1001, 8), (1001, 8), (1002, 16)]
    );
    assert!(reg.remove_task_source(ia).is_some());
    assert!(reg.remove_task_source(ia).is_none(), "removed twice");
    let mut words = Vec::new();
    {
        let w = reg.stop_the_world().unwrap();
        w.for_each_suspended(|t| words.push(t.word));
    }
    words.sort();
    assert_eq!(words, vec![1000, 1001]);
    assert_eq!(a.calls.load(SeqCst), 1, "a removed source is not asked");
    assert_eq!(b.calls.load(SeqCst), 2);
}

#[test]
fn a_source_added_during_a_stop_waits_for_the_restart() {
    let reg = Registry::new(Default::default()).unwrap();
    let w = reg.stop_the_world().unwrap();
    let added = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let t = {
        let reg = reg.clone();
        let added = added.clone();
        std::thread::spawn(move || {
            tx.send(()).unwrap();
            reg.add_task_source(fake(1));
            added.store(true, SeqCst);
        })
    };
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // Not a timing assertion that can fail on a slow machine: whatever
    // the scheduling, the source cannot be in while the world is held.
    assert!(!added.load(SeqCst));
    assert_eq!(w.task_sources(), 0);
    drop(w);
    t.join().unwrap();
    assert!(added.load(SeqCst));
    assert_eq!(reg.stop_the_world().unwrap().task_sources(), 1);
}

#[test]
fn a_stopped_thread_reports_its_task_word() {
    let reg = Registry::new(Default::default()).unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let tid = Arc::new(Mutex::new(0));
    let t = {
        let reg = reg.clone();
        let done = done.clone();
        let tid = tid.clone();
        std::thread::spawn(move || {
            let a = reg.attach().unwrap();
            assert_eq!(a.task_word(), 0, "a new attachment's word is 0");
            assert!(a.belongs_to(&reg));
            assert!(!a.belongs_to(&Registry::new(Default::default()).unwrap()));
            // SAFETY: this registry's coordinators (the test) only print
            // the word.
            unsafe { a.task_word_cell() }.store(0xfeed, SeqCst);
            *tid.lock().unwrap() = a.tid();
            ready_tx.send(()).unwrap();
            while !done.load(SeqCst) {
                std::hint::spin_loop();
            }
        })
    };
    ready_rx.recv().unwrap();
    let want = *tid.lock().unwrap();
    {
        let w = reg.stop_the_world().unwrap();
        let words: Vec<usize> = w
            .threads()
            .filter(|t| t.tid() == want)
            .map(|t| t.task_word())
            .collect();
        assert_eq!(words, vec![0xfeed]);
    }
    done.store(true, SeqCst);
    t.join().unwrap();
}

#[test]
fn the_coordinator_itself_may_add_and_remove_sources() {
    let reg = Registry::new(Default::default()).unwrap();
    let w = reg.stop_the_world().unwrap();
    let id = reg.add_task_source(fake(1));
    let mut n = 0;
    w.for_each_suspended(|_| n += 1);
    assert_eq!(n, 1);
    assert!(reg.remove_task_source(id).is_some());
    assert_eq!(w.task_sources(), 0);
}

/// The list of sources grows (its buffer made outside the no-preempt
/// region it is changed in) and shrinks: forty sources, each reported by a
/// stopped world, then none, and none of them still held.
#[test]
fn many_sources_are_added_and_removed() {
    let reg = Registry::new(Default::default()).unwrap();
    // Attached, so the list is changed inside this thread's no-preempt
    // regions.
    let _me = reg.attach().unwrap();
    let fakes: Vec<Arc<Fake>> = (0..40).map(|_| fake(1)).collect();
    let ids: Vec<_> = fakes
        .iter()
        .map(|f| reg.add_task_source(f.clone()))
        .collect();
    {
        let w = reg.stop_the_world().unwrap();
        assert_eq!(w.task_sources(), 40);
        let mut n = 0;
        w.for_each_suspended(|_| n += 1);
        assert_eq!(n, 40);
    }
    for id in ids {
        assert!(reg.remove_task_source(id).is_some());
    }
    let w = reg.stop_the_world().unwrap();
    assert_eq!(w.task_sources(), 0);
    drop(w);
    assert!(fakes.iter().all(|f| Arc::strong_count(f) == 1));
}
