//! Network namespaces: a thread living in a fresh namespace, which creates the tests'
//! sockets there so that the tracer can tell them from everything else on the box.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::{fs, io, mem, panic};

use socket2::{Domain, Socket, Type};

use crate::init;

type Job = Box<dyn FnOnce() + Send>;

/// A thread that moved itself into a new network namespace, brought `lo` up there, and runs
/// the closures sent to it, so the sockets they create belong to that namespace (their
/// descriptors work from any thread afterwards).
///
/// The thread lives until the `Netns` is dropped: the tracer finds namespaces through
/// `/proc/*/task/*/ns/net`, so it must outlive the connections it made.
pub struct Netns {
    inode: u32,
    tid: i32,
    comm: String,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// What the namespace thread reports once it is set up: (netns inode, tid, comm).
type NetnsIdentity = (u32, i32, String);

impl Netns {
    /// A new namespace whose thread is called `name` (the kernel keeps 15 bytes of it as
    /// the thread's comm, which is what connect events report).
    #[must_use]
    pub fn new(name: &str) -> Self {
        init();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<NetnsIdentity, String>>();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let setup = enter_new_netns();
                let entered = setup.is_ok();
                let _ = ready_tx.send(setup);
                if entered {
                    for job in jobs_rx {
                        job();
                    }
                }
            })
            .expect("spawn the namespace thread");
        let (inode, tid, comm) = ready_rx
            .recv()
            .expect("the namespace thread reports")
            .unwrap_or_else(|e| panic!("cannot set up a network namespace: {e}"));
        Self { inode, tid, comm, jobs: Some(jobs_tx), thread: Some(thread) }
    }

    /// Inode number of the namespace, as the tracer reports it in `netns`.
    #[must_use]
    pub fn inode(&self) -> u32 {
        self.inode
    }

    /// Thread id of the namespace thread (the `tid` of the connects it makes).
    #[must_use]
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// The namespace thread's comm (the `comm` of the connects it makes).
    #[must_use]
    pub fn comm(&self) -> &str {
        &self.comm
    }

    /// Runs `f` on the namespace thread and returns its result; a panic in `f` is
    /// re-raised here.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(panic::catch_unwind(panic::AssertUnwindSafe(f)));
        });
        self.jobs
            .as_ref()
            .expect("namespace thread running")
            .send(job)
            .expect("namespace thread alive");
        match rx.recv().expect("namespace thread answers") {
            Ok(result) => result,
            Err(payload) => panic::resume_unwind(payload),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn enter_new_netns() -> Result<NetnsIdentity, String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
    bring_loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
    let inode = fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| format!("stat /proc/thread-self/ns/net: {e}"))?
        .ino();
    let inode = u32::try_from(inode).map_err(|_| format!("netns inode {inode} exceeds u32"))?;
    let comm = fs::read_to_string("/proc/thread-self/comm")
        .map_err(|e| format!("read /proc/thread-self/comm: {e}"))?
        .trim_end()
        .to_owned();
    Ok((inode, nix::unistd::gettid().as_raw(), comm))
}

/// `ip link set lo up`, with the two ioctls it makes, so that no external command is needed
/// (the VM has busybox only). Bringing `lo` up also assigns 127.0.0.1/8 and `::1`.
fn bring_loopback_up() -> io::Result<()> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // SAFETY: `ifreq` is plain old data, for which all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::try_from(*src).expect("ASCII");
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `req`, which lives
    // across the call; the request type differs between libcs, hence the inferred cast.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags from `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
