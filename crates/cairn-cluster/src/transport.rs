//! Records between workers: an implementation of the runtime's transport
//! seam (`cairn_runtime::channel::Transport`) over framed TCP.
//!
//! Tasks see the same endpoints as in one process: crossbeam channels for
//! the data, credit and priority lanes. For a channel whose two tasks run
//! on different workers, this transport puts network threads between the
//! lanes: on the sending worker a writer encodes the data lane's messages
//! (records with the edge's codec) and the priority lane's announcements
//! into frames; on the receiving worker a reader decodes them into the
//! task's lanes, and the credits the receiving task grants travel back the
//! same connection. The credit rules stay the runtime's: the sender sends
//! only with a credit, so at most `capacity` messages of a channel are in
//! flight across the network, and a slow receiver stops its senders on
//! other hosts (backpressure crosses hosts). A grant also carries the
//! receiver's batch limit, so buffer debloating shrinks what is in flight
//! (credits) and how big each message is (records per batch) across hosts
//! too. Barriers and watermarks are data-lane messages, in line with the
//! records. An unaligned barrier's announcement travels on the priority
//! lane, written ahead of any data message the writer has at hand; since
//! credits keep at most the receiver's target in flight, it overtakes
//! everything a slow receiver has not been granted yet, as in one process.
//!
//! One connection per (attempt, sending worker, receiving worker), opened
//! by the sender. Frames (little-endian):
//!
//! ```text
//! u32 length of what follows, u8 kind, then by kind:
//! 0 hello     u16 version, 32 bytes job id, u32 attempt, u32 sending worker
//! 1 data      u32 edge, u32 source subtask, u32 target subtask, message
//! 2 credit    u32 edge, u32 source subtask, u32 target subtask, u32 credits,
//!             u32 batch limit in records (0: none)
//! 3 announce  u32 chain, u32 subtask, u32 input channel, barrier, u64 seq
//! 4 end       (the sender's channels all ended)
//! message: u8 tag; 0 records (the batch codec's bytes to the frame's end),
//!          1 watermark i64, 2 idle u8, 3 barrier, 4 end of input u8 drained
//! barrier: u64 checkpoint id, u64 timestamp ms, u8 type (0 checkpoint,
//!          1 savepoint, 2 savepoint that stops the job)
//! ```
//!
//! A connection that closes before its end frame, or a frame that breaks
//! these rules, is reported as the attempt's failure (the job fails over
//! from its latest checkpoint).

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cairn_graph::ResolvedGraph;
use cairn_runtime::channel::{
    ChannelId, Grant, LaneId, LocalTransport, PriorityEvent, ReceiverEnds, SenderEnds, Transport,
};
use cairn_runtime::codec::BatchCodec;
use cairn_runtime::record::{Barrier, Message, SnapshotType};
use cairn_runtime::task::TaskId;
use crossbeam_channel::{bounded, unbounded, Receiver, Select, Sender, TrySendError};

use crate::placement::Placement;

/// 2: credit frames carry the receiver's batch limit (buffer debloating).
const VERSION: u16 = 2;
const KIND_HELLO: u8 = 0;
const KIND_DATA: u8 = 1;
const KIND_CREDIT: u8 = 2;
const KIND_ANNOUNCE: u8 = 3;
const KIND_END: u8 = 4;
/// Largest frame accepted (a batch of large records still fits).
const MAX_FRAME: usize = 256 << 20;
/// How long a connection waits for its attempt to be wired on this worker.
const WIRING_WAIT: Duration = Duration::from_secs(60);

/// Bytes and records this process sent to other workers (benchmarks).
#[derive(Debug, Default)]
pub struct WireStats {
    pub bytes: AtomicU64,
    pub records: AtomicU64,
}

/// The process's totals.
pub fn wire_stats() -> &'static WireStats {
    static STATS: WireStats = WireStats {
        bytes: AtomicU64::new(0),
        records: AtomicU64::new(0),
    };
    &STATS
}

// ---- the data port ----------------------------------------------------------------------

/// The channels one inbound connection feeds, waiting for it.
struct Inbound {
    channels: HashMap<ChannelId, InChannel>,
    lanes: HashMap<LaneId, Sender<PriorityEvent>>,
    failures: Failures,
}

#[derive(Default)]
struct Routes {
    /// (job id, attempt, sending worker) -> what its connection feeds
    waiting: HashMap<(String, u32, u32), Inbound>,
    /// The newest attempt wired per job: connections of older ones are refused.
    newest: HashMap<String, u32>,
}

/// A worker's data port: accepts the connections of other workers and
/// hands each to the attempt it belongs to.
pub struct DataServer {
    address: SocketAddr,
    routes: Arc<(Mutex<Routes>, Condvar)>,
}

impl DataServer {
    /// Listen on `host:port` (port 0: any free port).
    pub fn bind(host: &str, port: u16) -> std::io::Result<Arc<DataServer>> {
        let listener = TcpListener::bind((host, port))?;
        let address = listener.local_addr()?;
        let routes: Arc<(Mutex<Routes>, Condvar)> = Arc::default();
        let r = routes.clone();
        std::thread::Builder::new()
            .name("cairn-data-accept".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let r = r.clone();
                    let _ = std::thread::Builder::new()
                        .name("cairn-data-in".into())
                        .spawn(move || accept(stream, &r));
                }
            })?;
        Ok(Arc::new(DataServer { address, routes }))
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    fn expect(&self, job: &str, attempt: u32, from: u32, inbound: Inbound) {
        let (lock, cv) = &*self.routes;
        let mut r = lock.lock().unwrap_or_else(|p| p.into_inner());
        let newest = r.newest.entry(job.to_string()).or_insert(attempt);
        if attempt > *newest {
            *newest = attempt;
        }
        let newest = *newest;
        r.waiting.retain(|(j, a, _), _| j != job || *a >= newest);
        r.waiting.insert((job.to_string(), attempt, from), inbound);
        cv.notify_all();
    }
}

/// Serve one inbound connection: its hello names the attempt and sender.
fn accept(stream: TcpStream, routes: &(Mutex<Routes>, Condvar)) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::with_capacity(
        256 << 10,
        match stream.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        },
    );
    let Ok(Some((KIND_HELLO, hello))) = read_frame(&mut reader) else {
        return;
    };
    let Some((job, attempt, from)) = parse_hello(&hello) else {
        return;
    };
    let _ = stream.set_read_timeout(None);
    let key = (job.clone(), attempt, from);
    let deadline = Instant::now() + WIRING_WAIT;
    let (lock, cv) = routes;
    let inbound = {
        let mut r = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(i) = r.waiting.remove(&key) {
                break Some(i);
            }
            let stale = r.newest.get(&job).is_some_and(|n| *n > attempt);
            let left = deadline.saturating_duration_since(Instant::now());
            if stale || left.is_zero() {
                break None;
            }
            r = cv.wait_timeout(r, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    };
    let Some(inbound) = inbound else {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    };
    run_inbound(stream, reader, from, inbound);
}

// ---- the transport ----------------------------------------------------------------------

/// The sending side of a remote channel, for the connection's writer.
struct OutChannel {
    data: Receiver<Message>,
    credits: Sender<Grant>,
    codec: Arc<dyn BatchCodec>,
}

/// The receiving side of a remote channel, for the connection's reader.
struct InChannel {
    data: Sender<Message>,
    credits: Receiver<Grant>,
    codec: Arc<dyn BatchCodec>,
    ended: bool,
}

/// What one outbound connection carries: channels, and lanes of its receiving tasks.
type Outbound = (Vec<(ChannelId, OutChannel)>, Vec<(LaneId, Receiver<PriorityEvent>)>);

#[derive(Default)]
struct Wiring {
    outbound: HashMap<usize, Outbound>,
    inbound: HashMap<usize, HashMap<ChannelId, InChannel>>,
    local_lanes: HashMap<LaneId, Sender<PriorityEvent>>,
}

/// Reports the attempt's failures (at most the first matters).
#[derive(Clone)]
pub struct Failures {
    tx: Sender<String>,
    /// Set when the attempt is being cancelled: broken connections are then expected.
    cancelled: Arc<AtomicBool>,
}

impl Failures {
    /// Failures go to `tx` unless `cancelled` is set.
    pub fn new(tx: Sender<String>, cancelled: Arc<AtomicBool>) -> Self {
        Failures { tx, cancelled }
    }

    fn report(&self, message: String) {
        if !self.cancelled.load(Ordering::Relaxed) {
            let _ = self.tx.send(message);
        }
    }
}

/// The transport of one attempt on one worker.
pub struct NetTransport {
    job_id: String,
    attempt: u32,
    /// This worker's index in `peers`.
    me: usize,
    /// Data addresses of the attempt's workers, by index.
    peers: Vec<String>,
    placement: Placement,
    /// Per edge: the chains of its source and target nodes.
    edge_chains: Vec<(usize, usize)>,
    server: Arc<DataServer>,
    failures: Failures,
    wiring: Mutex<Wiring>,
}

impl NetTransport {
    /// The transport of `attempt` for worker `me` of `peers`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job_id: &str,
        attempt: u32,
        me: usize,
        peers: Vec<String>,
        placement: Placement,
        graph: &ResolvedGraph,
        server: Arc<DataServer>,
        failures: Failures,
    ) -> Self {
        let chain_of: HashMap<usize, usize> = graph
            .chains
            .iter()
            .enumerate()
            .flat_map(|(c, nodes)| nodes.iter().map(move |n| (n.0, c)))
            .collect();
        let edge_chains = graph
            .edges
            .iter()
            .map(|e| (chain_of[&e.source.0], chain_of[&e.target.0]))
            .collect();
        NetTransport {
            job_id: job_id.to_string(),
            attempt,
            me,
            peers,
            placement,
            edge_chains,
            server,
            failures,
            wiring: Mutex::new(Wiring::default()),
        }
    }

    /// Whether `task` runs on this worker.
    pub fn is_local(&self, task: TaskId) -> bool {
        self.placement.worker_of(task) == Some(self.me)
    }

    fn worker_of(&self, task: TaskId) -> usize {
        self.placement.worker_of(task).unwrap_or(self.me)
    }

    fn wiring(&self) -> std::sync::MutexGuard<'_, Wiring> {
        self.wiring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connect the remote channels: after the tasks are started (every
    /// channel was asked for), open the connections to the workers this
    /// one sends to and accept those of the workers it receives from.
    pub fn start_links(&self) {
        let mut w = self.wiring();
        let lanes = w.local_lanes.clone();
        for (peer, channels) in std::mem::take(&mut w.inbound) {
            self.server.expect(
                &self.job_id,
                self.attempt,
                peer as u32,
                Inbound {
                    channels,
                    lanes: lanes.clone(),
                    failures: self.failures.clone(),
                },
            );
        }
        for (peer, (channels, lanes)) in std::mem::take(&mut w.outbound) {
            if channels.is_empty() {
                continue; // announcements only travel with a channel's records
            }
            let address = self.peers.get(peer).cloned().unwrap_or_default();
            let (job, attempt, me, failures) =
                (self.job_id.clone(), self.attempt, self.me as u32, self.failures.clone());
            let _ = std::thread::Builder::new()
                .name(format!("cairn-data-out-{peer}"))
                .spawn(move || {
                    if let Err(e) = run_outbound(&address, &job, attempt, me, channels, lanes) {
                        failures.report(format!("sending records to the worker at {address}: {e}"));
                    }
                });
        }
    }
}

/// Ends nobody uses (the other side of a channel runs elsewhere).
fn unused_sender_ends() -> SenderEnds {
    SenderEnds {
        data: bounded(1).0,
        credits: crossbeam_channel::never(),
        initial_credits: 0,
    }
}

fn unused_receiver_ends(capacity: u32, initial_credits: u32) -> ReceiverEnds {
    ReceiverEnds {
        data: crossbeam_channel::never(),
        credits: unbounded().0,
        capacity,
        initial_credits,
    }
}

impl Transport for NetTransport {
    fn channel(
        &self,
        id: ChannelId,
        capacity: u32,
        initial_credits: u32,
        codec: &Arc<dyn BatchCodec>,
    ) -> (SenderEnds, ReceiverEnds) {
        let (src_chain, dst_chain) = self.edge_chains[id.edge];
        let src = self.worker_of(TaskId {
            chain: src_chain,
            subtask: id.source_subtask,
        });
        let dst = self.worker_of(TaskId {
            chain: dst_chain,
            subtask: id.target_subtask,
        });
        let capacity = capacity.max(1);
        // Both sides compute the same value, as LocalTransport does: the
        // sender starts with what the receiver counts as outstanding.
        let initial_credits = initial_credits.clamp(1, capacity);
        match (src == self.me, dst == self.me) {
            (true, true) => LocalTransport.channel(id, capacity, initial_credits, codec),
            (false, false) => (unused_sender_ends(), unused_receiver_ends(capacity, initial_credits)),
            (true, false) => {
                let (data_tx, data_rx) = bounded(capacity as usize);
                let (credit_tx, credit_rx) = unbounded();
                self.wiring().outbound.entry(dst).or_default().0.push((
                    id,
                    OutChannel {
                        data: data_rx,
                        credits: credit_tx,
                        codec: codec.clone(),
                    },
                ));
                (
                    SenderEnds {
                        data: data_tx,
                        credits: credit_rx,
                        initial_credits,
                    },
                    unused_receiver_ends(capacity, initial_credits),
                )
            }
            (false, true) => {
                let (data_tx, data_rx) = bounded(capacity as usize);
                let (credit_tx, credit_rx) = unbounded();
                self.wiring().inbound.entry(src).or_default().insert(
                    id,
                    InChannel {
                        data: data_tx,
                        credits: credit_rx,
                        codec: codec.clone(),
                        ended: false,
                    },
                );
                (
                    unused_sender_ends(),
                    ReceiverEnds {
                        data: data_rx,
                        credits: credit_tx,
                        capacity,
                        initial_credits,
                    },
                )
            }
        }
    }

    fn priority_lane(&self, lane: LaneId) -> (Sender<PriorityEvent>, Receiver<PriorityEvent>) {
        let (tx, rx) = unbounded();
        let owner = self.worker_of(TaskId {
            chain: lane.chain,
            subtask: lane.subtask,
        });
        if owner == self.me {
            self.wiring().local_lanes.insert(lane, tx.clone());
            (tx, rx)
        } else {
            // Local senders announce into it; the writer to `owner` forwards.
            self.wiring().outbound.entry(owner).or_default().1.push((lane, rx));
            (tx, crossbeam_channel::never())
        }
    }
}

// ---- frames -----------------------------------------------------------------------------

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_channel(out: &mut Vec<u8>, id: ChannelId) {
    put_u32(out, id.edge as u32);
    put_u32(out, id.source_subtask);
    put_u32(out, id.target_subtask);
}

fn put_barrier(out: &mut Vec<u8>, b: &Barrier) {
    put_u64(out, b.checkpoint_id);
    put_u64(out, b.timestamp_ms);
    out.push(match b.snapshot_type {
        SnapshotType::Checkpoint => 0,
        SnapshotType::Savepoint { terminate: false } => 1,
        SnapshotType::Savepoint { terminate: true } => 2,
    });
}

/// Start a frame of `kind` in `out` (its length is patched by `finish_frame`).
fn begin_frame(out: &mut Vec<u8>, kind: u8) -> usize {
    let at = out.len();
    put_u32(out, 0);
    out.push(kind);
    at
}

fn finish_frame(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Append a data frame for `msg`; returns the records it carries.
fn encode_data(out: &mut Vec<u8>, id: ChannelId, msg: &Message, codec: &dyn BatchCodec) -> Result<u64, String> {
    let at = begin_frame(out, KIND_DATA);
    put_channel(out, id);
    let mut records = 0;
    match msg {
        // The keys a local sender carries stay behind: the receiving
        // worker computes them.
        Message::Records(batch, _, _) => {
            out.push(0);
            records = codec.encode(batch, out).map_err(|e| {
                format!(
                    "records of type {} on edge {} cannot be encoded to cross to another worker: {e}",
                    codec.record_type(),
                    id.edge
                )
            })?;
        }
        Message::Watermark(wm) => {
            out.push(1);
            out.extend_from_slice(&wm.to_le_bytes());
        }
        Message::Idle(idle) => {
            out.push(2);
            out.push(u8::from(*idle));
        }
        Message::Barrier(b) => {
            out.push(3);
            put_barrier(out, b);
        }
        Message::EndOfInput { drained } => {
            out.push(4);
            out.push(u8::from(*drained));
        }
    }
    finish_frame(out, at);
    Ok(records)
}

/// Reads little-endian fields of one frame, failing on truncation.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("a frame is truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| "bad field")?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "bad field")?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "bad field")?))
    }
    fn channel(&mut self) -> Result<ChannelId, String> {
        Ok(ChannelId {
            edge: self.u32()? as usize,
            source_subtask: self.u32()?,
            target_subtask: self.u32()?,
        })
    }
    fn barrier(&mut self) -> Result<Barrier, String> {
        Ok(Barrier {
            checkpoint_id: self.u64()?,
            timestamp_ms: self.u64()?,
            snapshot_type: match self.u8()? {
                0 => SnapshotType::Checkpoint,
                1 => SnapshotType::Savepoint { terminate: false },
                2 => SnapshotType::Savepoint { terminate: true },
                t => return Err(format!("unknown barrier type {t}")),
            },
        })
    }
}

fn decode_message(f: &mut Fields<'_>, codec: &dyn BatchCodec) -> Result<Message, String> {
    Ok(match f.u8()? {
        0 => {
            let batch = codec
                .decode(f.0)
                .map_err(|e| format!("a batch of {} does not decode: {e}", codec.record_type()))?;
            let n = codec.count(&batch);
            f.0 = &[];
            Message::Records(batch, n, None)
        }
        1 => Message::Watermark(f.u64()? as i64),
        2 => Message::Idle(f.u8()? != 0),
        3 => Message::Barrier(f.barrier()?),
        4 => Message::EndOfInput { drained: f.u8()? != 0 },
        t => return Err(format!("unknown message tag {t}")),
    })
}

/// Read one frame: `None` at a clean end of the stream.
fn read_frame(r: &mut impl Read) -> Result<Option<(u8, Vec<u8>)>, String> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(format!("a frame of {len} bytes is not allowed"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    let kind = body[0];
    body.remove(0);
    Ok(Some((kind, body)))
}

fn hello(job: &str, attempt: u32, from: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let at = begin_frame(&mut out, KIND_HELLO);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let mut id = [b'0'; 32];
    for (d, s) in id.iter_mut().zip(job.bytes()) {
        *d = s;
    }
    out.extend_from_slice(&id);
    put_u32(&mut out, attempt);
    put_u32(&mut out, from);
    finish_frame(&mut out, at);
    out
}

fn parse_hello(body: &[u8]) -> Option<(String, u32, u32)> {
    let mut f = Fields(body);
    if f.u16().ok()? != VERSION {
        return None;
    }
    let job = String::from_utf8(f.take(32).ok()?.to_vec()).ok()?;
    Some((job, f.u32().ok()?, f.u32().ok()?))
}

// ---- connections ------------------------------------------------------------------------

fn connect(address: &str) -> Result<TcpStream, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let addrs: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {address}: {e}"))?
            .collect();
        let mut last = String::from("no address");
        for a in &addrs {
            match TcpStream::connect_timeout(a, Duration::from_secs(5)) {
                Ok(s) => return Ok(s),
                Err(e) => last = e.to_string(),
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("cannot connect: {last}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sending worker's side of one connection.
fn run_outbound(
    address: &str,
    job: &str,
    attempt: u32,
    me: u32,
    channels: Vec<(ChannelId, OutChannel)>,
    lanes: Vec<(LaneId, Receiver<PriorityEvent>)>,
) -> Result<(), String> {
    let stream = connect(address)?;
    let _ = stream.set_nodelay(true);
    // Credits come back on the same connection.
    let credits: HashMap<ChannelId, Sender<Grant>> = channels.iter().map(|(id, c)| (*id, c.credits.clone())).collect();
    let read_half = stream.try_clone().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("cairn-data-credits".into())
        .spawn(move || {
            let mut r = BufReader::new(read_half);
            while let Ok(Some((kind, body))) = read_frame(&mut r) {
                if kind != KIND_CREDIT {
                    break;
                }
                let mut f = Fields(&body);
                let (Ok(id), Ok(credits_granted), Ok(batch_records)) = (f.channel(), f.u32(), f.u32()) else {
                    break;
                };
                if let Some(tx) = credits.get(&id) {
                    let _ = tx.send(Grant {
                        credits: credits_granted,
                        batch_records,
                    });
                }
            }
        })
        .map_err(|e| e.to_string())?;
    let mut w = BufWriter::with_capacity(256 << 10, stream.try_clone().map_err(|e| e.to_string())?);
    // At once, not with the first message: the receiver starts passing its
    // grants (a batch limit may come before any record) once it knows us.
    w.write_all(&hello(job, attempt, me))
        .and_then(|_| w.flush())
        .map_err(|e| e.to_string())?;
    let mut data: Vec<Option<(ChannelId, OutChannel)>> = channels.into_iter().map(Some).collect();
    let mut announce: Vec<Option<(LaneId, Receiver<PriorityEvent>)>> = lanes.into_iter().map(Some).collect();
    let mut buf = Vec::with_capacity(64 << 10);
    let stats = wire_stats();
    loop {
        if data.iter().all(Option::is_none) && announce.iter().all(Option::is_none) {
            break;
        }
        // Wait for the first message, then take whatever else is ready.
        let mut sel = Select::new();
        let mut which = Vec::new();
        for (i, c) in data.iter().enumerate() {
            if let Some((_, c)) = c {
                sel.recv(&c.data);
                which.push((false, i));
            }
        }
        for (i, l) in announce.iter().enumerate() {
            if let Some((_, rx)) = l {
                sel.recv(rx);
                which.push((true, i));
            }
        }
        let op = sel.select();
        let (is_lane, i) = which[op.index()];
        let mut pending = Vec::new();
        if is_lane {
            let (lane, rx) = announce[i].as_ref().expect("selected lane");
            match op.recv(rx) {
                Ok(ev) => pending.push((true, i, Some(*lane), None, Some(ev))),
                Err(_) => announce[i] = None,
            }
        } else {
            let (_, c) = data[i].as_ref().expect("selected channel");
            match op.recv(&c.data) {
                Ok(m) => pending.push((false, i, None, Some(m), None)),
                Err(_) => data[i] = None,
            }
        }
        // Announcements first, so a barrier's announcement never trails it.
        for (j, l) in announce.iter().enumerate() {
            if let Some((lane, rx)) = l {
                while let Ok(ev) = rx.try_recv() {
                    pending.push((true, j, Some(*lane), None, Some(ev)));
                }
            }
        }
        for (j, c) in data.iter().enumerate() {
            if let Some((_, c)) = c {
                for _ in 0..64 {
                    match c.data.try_recv() {
                        Ok(m) => pending.push((false, j, None, Some(m), None)),
                        Err(_) => break,
                    }
                }
            }
        }
        pending.sort_by_key(|p| !p.0);
        for (_, j, lane, msg, ev) in pending {
            buf.clear();
            if let (Some(lane), Some(PriorityEvent::Announce { channel, barrier, seq })) = (lane, ev) {
                let at = begin_frame(&mut buf, KIND_ANNOUNCE);
                put_u32(&mut buf, lane.chain as u32);
                put_u32(&mut buf, lane.subtask);
                put_u32(&mut buf, channel as u32);
                put_barrier(&mut buf, &barrier);
                put_u64(&mut buf, seq);
                finish_frame(&mut buf, at);
            } else if let Some(m) = msg {
                let (id, c) = data[j].as_ref().expect("channel of a message");
                let n = encode_data(&mut buf, *id, &m, &*c.codec)?;
                stats.records.fetch_add(n, Ordering::Relaxed);
            }
            stats.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            w.write_all(&buf).map_err(|e| e.to_string())?;
        }
        w.flush().map_err(|e| e.to_string())?;
    }
    let mut end = Vec::new();
    let at = begin_frame(&mut end, KIND_END);
    finish_frame(&mut end, at);
    w.write_all(&end).and_then(|_| w.flush()).map_err(|e| e.to_string())?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

/// The receiving worker's side of one connection: frames into the lanes,
/// and the tasks' credits back.
fn run_inbound(stream: TcpStream, mut reader: BufReader<TcpStream>, from: u32, inbound: Inbound) {
    let Inbound {
        mut channels,
        lanes,
        failures,
    } = inbound;
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    // The writer: credits the receiving tasks grant.
    let credit_lanes: Vec<(ChannelId, Receiver<Grant>)> =
        channels.iter().map(|(id, c)| (*id, c.credits.clone())).collect();
    let mut write_half = match stream.try_clone() {
        Ok(s) => BufWriter::new(s),
        Err(_) => return,
    };
    let _ = std::thread::Builder::new()
        .name("cairn-data-grant".into())
        .spawn(move || {
            let mut live: Vec<Option<(ChannelId, Receiver<Grant>)>> = credit_lanes.into_iter().map(Some).collect();
            let mut buf = Vec::new();
            while live.iter().any(Option::is_some) {
                let mut sel = Select::new();
                let mut which = Vec::new();
                for (i, l) in live.iter().enumerate() {
                    if let Some((_, rx)) = l {
                        sel.recv(rx);
                        which.push(i);
                    }
                }
                let op = sel.select();
                let i = which[op.index()];
                let (id, rx) = live[i].as_ref().expect("selected");
                let id = *id;
                let mut grant = match op.recv(rx) {
                    Ok(g) => g,
                    Err(_) => {
                        live[i] = None;
                        continue;
                    }
                };
                // Grants waiting together travel as one: their credits add
                // up, the newest batch limit holds.
                while let Ok(more) = rx.try_recv() {
                    grant.credits = grant.credits.saturating_add(more.credits);
                    grant.batch_records = more.batch_records;
                }
                buf.clear();
                let at = begin_frame(&mut buf, KIND_CREDIT);
                put_channel(&mut buf, id);
                put_u32(&mut buf, grant.credits);
                put_u32(&mut buf, grant.batch_records);
                finish_frame(&mut buf, at);
                if write_half.write_all(&buf).and_then(|_| write_half.flush()).is_err() {
                    return;
                }
            }
            let _ = write_half.get_ref().shutdown(Shutdown::Write);
        });
    let fail = |why: String| failures.report(format!("receiving records from worker {from} ({peer}): {why}"));
    loop {
        let frame = match read_frame(&mut reader) {
            Ok(Some(f)) => f,
            Ok(None) => {
                if channels.values().any(|c| !c.ended) {
                    fail("the connection closed before its channels ended (the worker or the link is gone)".into());
                }
                return;
            }
            Err(e) => {
                fail(e);
                return;
            }
        };
        let (kind, body) = frame;
        let mut f = Fields(&body);
        let step = (|| -> Result<bool, String> {
            match kind {
                KIND_DATA => {
                    let id = f.channel()?;
                    let c = channels
                        .get_mut(&id)
                        .ok_or_else(|| format!("records for an unknown channel {id:?}"))?;
                    let msg = decode_message(&mut f, &*c.codec)?;
                    if matches!(msg, Message::EndOfInput { .. }) {
                        c.ended = true;
                    }
                    match c.data.try_send(msg) {
                        Ok(()) | Err(TrySendError::Disconnected(_)) => Ok(true),
                        Err(TrySendError::Full(_)) => Err(format!(
                            "channel {id:?} was sent more than its credits allow (a protocol violation)"
                        )),
                    }
                }
                KIND_ANNOUNCE => {
                    let lane = LaneId {
                        chain: f.u32()? as usize,
                        subtask: f.u32()?,
                    };
                    let channel = f.u32()? as usize;
                    let barrier = f.barrier()?;
                    let seq = f.u64()?;
                    if let Some(tx) = lanes.get(&lane) {
                        let _ = tx.send(PriorityEvent::Announce { channel, barrier, seq });
                    }
                    Ok(true)
                }
                KIND_END => {
                    for c in channels.values_mut() {
                        c.ended = true;
                    }
                    Ok(false)
                }
                k => Err(format!("unknown frame kind {k}")),
            }
        })();
        match step {
            Ok(true) => {}
            Ok(false) => return, // dropping the data lanes: the senders are done
            Err(e) => {
                fail(e);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_runtime::codec::batch_codec;
    use cairn_runtime::record::StreamRecord;

    #[test]
    fn messages_round_trip_through_frames() {
        let codec = batch_codec::<(u64, String)>();
        let id = ChannelId {
            edge: 3,
            source_subtask: 1,
            target_subtask: 2,
        };
        let b = Barrier {
            checkpoint_id: 12,
            timestamp_ms: 34,
            snapshot_type: SnapshotType::Savepoint { terminate: true },
        };
        let batch: Vec<StreamRecord<(u64, String)>> = vec![
            StreamRecord::new((1, "a".into())),
            StreamRecord::with_timestamp((2, "bé".into()), 77),
        ];
        let msgs = vec![
            Message::Records(Box::new(batch.clone()), 2, None),
            Message::Watermark(-5),
            Message::Idle(true),
            Message::Barrier(b),
            Message::EndOfInput { drained: false },
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            encode_data(&mut buf, id, m, &*codec).unwrap();
        }
        let mut r = &buf[..];
        let mut back = Vec::new();
        while let Some((kind, body)) = read_frame(&mut r).unwrap() {
            assert_eq!(kind, KIND_DATA);
            let mut f = Fields(&body);
            assert_eq!(f.channel().unwrap(), id);
            back.push(decode_message(&mut f, &*codec).unwrap());
        }
        assert_eq!(back.len(), 5);
        match &back[0] {
            Message::Records(got, n, _) => {
                assert_eq!(*n, 2);
                assert_eq!(got.downcast_ref::<Vec<StreamRecord<(u64, String)>>>().unwrap(), &batch);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(back[1], Message::Watermark(-5)));
        assert!(matches!(back[2], Message::Idle(true)));
        assert!(matches!(back[3], Message::Barrier(x) if x == b));
        assert!(matches!(back[4], Message::EndOfInput { drained: false }));
    }

    #[test]
    fn damaged_frames_are_errors_not_panics() {
        let codec = batch_codec::<u64>();
        let mut buf = Vec::new();
        let id = ChannelId {
            edge: 0,
            source_subtask: 0,
            target_subtask: 0,
        };
        encode_data(
            &mut buf,
            id,
            &Message::Barrier(Barrier {
                checkpoint_id: 1,
                timestamp_ms: 2,
                snapshot_type: SnapshotType::Checkpoint,
            }),
            &*codec,
        )
        .unwrap();
        for cut in 4..buf.len() {
            let body = &buf[5..cut.max(5)];
            let mut f = Fields(body);
            let r = f.channel().and_then(|_| decode_message(&mut f, &*codec));
            assert!(r.is_err(), "cut at {cut}");
        }
        let mut huge = Vec::new();
        put_u32(&mut huge, u32::MAX);
        assert!(read_frame(&mut &huge[..]).is_err());
        assert!(parse_hello(&[9, 9]).is_none());
        let h = hello("0123456789abcdef0123456789abcdef", 4, 2);
        let (kind, body) = read_frame(&mut &h[..]).unwrap().unwrap();
        assert_eq!(kind, KIND_HELLO);
        assert_eq!(
            parse_hello(&body),
            Some(("0123456789abcdef0123456789abcdef".to_string(), 4, 2))
        );
    }

    /// Two transports of one attempt wired through a real data port on
    /// loopback: records and a barrier cross, credits bound what is in
    /// flight, and the end of the sender ends the receiver's channel.
    #[test]
    fn records_cross_between_two_workers_with_credits() {
        use cairn_runtime::channel::{InputChannel, OutputChannel};
        let server = DataServer::bind("127.0.0.1", 0).unwrap();
        let graph = two_node_graph();
        let placement = Placement {
            slot_owner: [(0, 0), (1, 1)].into_iter().collect(),
        };
        let peers = vec![server.address().to_string(), server.address().to_string()];
        let (ftx, frx) = unbounded();
        let failures = Failures::new(ftx, Arc::new(AtomicBool::new(false)));
        let job = "0123456789abcdef0123456789abcdef";
        let a = NetTransport::new(
            job,
            0,
            0,
            peers.clone(),
            placement.clone(),
            &graph,
            server.clone(),
            failures.clone(),
        );
        let b = NetTransport::new(job, 0, 1, peers, placement, &graph, server.clone(), failures);
        let codec = batch_codec::<u64>();
        // Edge 0 goes from chain 0 to chain 1; subtask 0 -> subtask 1 crosses.
        let id = ChannelId {
            edge: 0,
            source_subtask: 0,
            target_subtask: 1,
        };
        let lane = LaneId { chain: 1, subtask: 1 };
        let (s_ends, _) = a.channel(id, 2, 2, &codec);
        let (a_lane, _) = a.priority_lane(lane);
        let (_, r_ends) = b.channel(id, 2, 2, &codec);
        let (_, b_lane) = b.priority_lane(lane);
        let mut out = OutputChannel::new(s_ends, a_lane, 0);
        let mut inp = InputChannel::new(r_ends);
        a.start_links();
        b.start_links();
        let n = 200u64;
        let sender = std::thread::spawn(move || {
            for i in 0..n {
                out.enqueue(Message::Records(Box::new(vec![StreamRecord::new(i)]), 1, None))
                    .unwrap();
                while out.backlog() > 4 {
                    out.pump().unwrap();
                    std::thread::yield_now();
                }
                assert!(out.backlog() <= 5);
            }
            out.emit_barrier(Barrier {
                checkpoint_id: 3,
                timestamp_ms: 0,
                snapshot_type: SnapshotType::Checkpoint,
            })
            .unwrap();
            out.enqueue(Message::EndOfInput { drained: true }).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while out.pump().unwrap() {
                assert!(Instant::now() < deadline, "credits never came back");
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        let mut barrier_at = None;
        loop {
            assert!(Instant::now() < deadline, "records did not arrive");
            match inp.try_read(false) {
                Ok(Some(Message::Records(batch, _, _))) => got.extend(
                    batch
                        .downcast::<Vec<StreamRecord<u64>>>()
                        .unwrap()
                        .into_iter()
                        .map(|r| r.value),
                ),
                Ok(Some(Message::Barrier(_))) => barrier_at = Some(inp.read_count() - 1),
                Ok(Some(Message::EndOfInput { .. })) => break,
                Ok(Some(_)) => {}
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => panic!("the channel broke"),
            }
        }
        sender.join().unwrap();
        assert_eq!(got, (0..n).collect::<Vec<_>>(), "in order, none lost or twice");
        assert_eq!(barrier_at, Some(n), "the barrier is in line, after every record");
        match b_lane.recv_timeout(Duration::from_secs(10)).unwrap() {
            PriorityEvent::Announce { channel, barrier, seq } => {
                assert_eq!((channel, barrier.checkpoint_id, seq), (0, 3, n))
            }
        }
        assert!(frx.try_recv().is_err(), "no failure reported");
    }

    /// Buffer debloating across hosts: the receiver's batch limit and a
    /// lowered in-flight target reach a sender on another worker through
    /// the credit frames, in order with its grants.
    #[test]
    fn debloating_reaches_a_sender_on_another_worker() {
        use cairn_runtime::channel::{InputChannel, OutputChannel};
        let server = DataServer::bind("127.0.0.1", 0).unwrap();
        let graph = two_node_graph();
        let placement = Placement {
            slot_owner: [(0, 0), (1, 1)].into_iter().collect(),
        };
        let peers = vec![server.address().to_string(), server.address().to_string()];
        let (ftx, frx) = unbounded();
        let failures = Failures::new(ftx, Arc::new(AtomicBool::new(false)));
        let job = "fedcba9876543210fedcba9876543210";
        let a = NetTransport::new(
            job,
            0,
            0,
            peers.clone(),
            placement.clone(),
            &graph,
            server.clone(),
            failures.clone(),
        );
        let b = NetTransport::new(job, 0, 1, peers, placement, &graph, server.clone(), failures);
        let codec = batch_codec::<u64>();
        let id = ChannelId {
            edge: 0,
            source_subtask: 0,
            target_subtask: 1,
        };
        let lane = LaneId { chain: 1, subtask: 1 };
        // Capacity 4, starting with 4 credits.
        let (s_ends, _) = a.channel(id, 4, 4, &codec);
        let (a_lane, _) = a.priority_lane(lane);
        let (_, r_ends) = b.channel(id, 4, 4, &codec);
        let _b_lane = b.priority_lane(lane);
        let mut out = OutputChannel::new(s_ends, a_lane, 0);
        let mut inp = InputChannel::new(r_ends);
        a.start_links();
        b.start_links();
        let deadline = Instant::now() + Duration::from_secs(30);
        let wait = |what: &str, f: &mut dyn FnMut() -> bool| {
            while !f() {
                assert!(Instant::now() < deadline, "{what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        };

        inp.set_batch_limit(Some(16));
        wait("the batch limit to cross", &mut || out.batch_limit() == Some(16));

        // One message in flight from now on.
        inp.set_target(1);
        for i in 0..10u64 {
            out.enqueue(Message::Records(Box::new(vec![StreamRecord::new(i)]), 1, None))
                .unwrap();
        }
        out.pump().unwrap();
        assert_eq!(out.sent(), 4, "the initial credits");
        let mut read = 0;
        wait("the first four messages", &mut || {
            if inp.try_read(false).unwrap().is_some() {
                read += 1;
            }
            read == 4
        });
        // Reading four granted one credit (the target), not four.
        wait("the credit to come back", &mut || {
            out.pump().unwrap();
            out.sent() >= 5
        });
        // A grant sent after it travels behind it: once the sender has the
        // new limit, it has every credit granted before.
        inp.set_batch_limit(Some(8));
        wait("the second batch limit to cross", &mut || out.batch_limit() == Some(8));
        out.pump().unwrap();
        assert_eq!(out.sent(), 5, "one message in flight at the lowered target");
        inp.set_batch_limit(None);
        wait("the limit's removal to cross", &mut || out.batch_limit().is_none());
        assert!(frx.try_recv().is_err(), "no failure reported");
    }

    fn two_node_graph() -> ResolvedGraph {
        use cairn_graph::{Edge, GraphSettings, JobGraph, NodeKind, NodeSpec, Partitioning};
        let mut g = JobGraph::new();
        let spec = |name: &str, kind| NodeSpec {
            name: name.into(),
            uid: Some(name.into()),
            kind,
            parallelism: Some(2),
            max_parallelism: None,
            stateful: false,
            keyed: false,
            chaining_disabled: false,
        };
        let a = g.add_node(spec("a", NodeKind::Source));
        let b = g.add_node(spec("b", NodeKind::Operator));
        g.add_edge(Edge {
            source: a,
            source_port: 0,
            target: b,
            target_input: 0,
            partitioning: Partitioning::Rebalance,
        });
        g.resolve(
            "t",
            GraphSettings {
                default_parallelism: 2,
                max_parallelism: None,
                auto_generate_uids: false,
            },
        )
        .unwrap()
    }
}
