import Foundation

/// A serial executor that runs every job on one dedicated OS thread.
///
/// Connection actors use it as their executor so that "isolated to the connection" means
/// "running on the connection's own thread": blocking hiredis and libpq calls then never occupy
/// a thread of Swift's cooperative pool.
///
/// It is a task executor too: a task that prefers it (`withTaskExecutorPreference`) runs its
/// non-isolated code on the same thread, so its calls into the connection cost no thread
/// wake-ups on the way in and out (two per call otherwise, which on a loaded machine means two
/// waits in the run queue).
///
/// - Important: Call ``shutdown()`` once the owner is done; the thread exits after draining the jobs
///   already enqueued.
public final class ThreadExecutor: SerialExecutor, TaskExecutor, @unchecked Sendable {
    // `jobs` and `isStopped` are only touched with `condition` locked; that is the whole invariant
    // behind `@unchecked Sendable`.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var isStopped = false

    /// - Parameter name: The thread's name in `top -H`, `ps -L` and `perf`, cut to the 15 bytes
    ///   Linux keeps (it refuses a longer one).
    public init(name: String) {
        let threadName = Self.threadName(name)
        // Set by the thread itself: Foundation's `Thread.name` does not reach the OS on Linux, and
        // Swift's Glibc does not declare pthread_setname_np; the name is the thread's comm file.
        let thread = Thread { [self] in
            try? threadName.write(toFile: "/proc/thread-self/comm", atomically: false, encoding: .utf8)
            Self.blockBrokenPipeSignal()
            runLoop()
        }
        thread.name = threadName
        thread.start()
    }

    /// A write to a socket whose peer is gone raises SIGPIPE, whose default action ends the
    /// process. hiredis and OpenSSL write with write(2), and the producer library runs in
    /// processes that never ignored the signal (the CLI does; a test runner or an API service need
    /// not). Blocked on this thread, the signal stays pending and harmless, and the write fails
    /// with EPIPE, which is how the connection learns the peer is gone.
    static func blockBrokenPipeSignal() {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
    }

    static func threadName(_ name: String) -> String {
        var name = name
        while name.utf8.count > 15 { name.removeLast() }
        return name
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    public func asUnownedTaskExecutor() -> UnownedTaskExecutor {
        UnownedTaskExecutor(ordinary: self)
    }

    /// Lets the thread finish the jobs it already has and then exit.
    public func shutdown() {
        condition.lock()
        isStopped = true
        condition.signal()
        condition.unlock()
    }

    private func runLoop() {
        var batch: [UnownedJob] = []
        while true {
            condition.lock()
            while jobs.isEmpty && !isStopped {
                condition.wait()
            }
            if jobs.isEmpty {
                condition.unlock()
                return
            }
            swap(&batch, &jobs)
            condition.unlock()
            for job in batch {
                job.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
            }
            batch.removeAll(keepingCapacity: true)
        }
    }
}
