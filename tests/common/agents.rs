//! Library agents on a compio runtime of their own thread, serving
//! sessions as `ringway agent --expose` does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use compio::runtime::Runtime;
use futures_channel::oneshot;
use ringway::client::{self, AgentChannel, AgentHandler, AgentInfo, ChannelEnd, ClientError, Endpoint, Outgoing};
use ringway::proto::{FromAgent, SessionId};
use ringway::relay::{Counters, relay};

/// Relay buffer per direction of the test agents, as `ringway agent` uses.
const AGENT_RELAY_BUFFER: usize = 64 * 1024;

/// What a test agent does when the gateway asks it to open a session.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Dial this local service, join the session and relay (as `ringway
    /// agent --expose` does); send `FAIL` if the service refuses.
    Serve(SocketAddr),
    /// Do nothing (a broken agent), so the control's pairing times out.
    IgnoreOpen,
}

/// How one agent's channel ended: its index and `run`'s result.
pub type AgentEnd = (usize, Result<ChannelEnd, String>);

/// Library agents running on one thread with its own compio runtime. They
/// stop, closing every socket, when this is dropped.
pub struct AgentThread {
    stop: Option<oneshot::Sender<()>>,
    ends: mpsc::Receiver<AgentEnd>,
    opens: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl AgentThread {
    /// Registers one agent and keeps it running; the registration's error
    /// if the gateway refused it.
    pub fn start(ep: Endpoint, behaviour: Behaviour) -> Result<AgentThread, ClientError> {
        let (agents, mut registered) = AgentThread::start_many(vec![(ep, behaviour)]);
        // Invariant: start_many returns one result per agent given.
        registered.pop().expect("one registration result")?;
        Ok(agents)
    }

    /// Registers every agent at once on one thread; returns the
    /// registration results in the order given.
    pub fn start_many(agents: Vec<(Endpoint, Behaviour)>) -> (AgentThread, Vec<Result<(), ClientError>>) {
        let all = agents.len().max(1);
        AgentThread::start_in_waves(agents, all)
    }

    /// As [`AgentThread::start_many`], `wave` agents at a time: each wave
    /// starts once the one before it has finished registering (as agents
    /// behind one NAT come back at different moments).
    pub fn start_in_waves(
        agents: Vec<(Endpoint, Behaviour)>,
        wave: usize,
    ) -> (AgentThread, Vec<Result<(), ClientError>>) {
        let count = agents.len();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (registered_tx, registered_rx) = mpsc::channel();
        let (ends_tx, ends) = mpsc::channel();
        let opens = Arc::new(AtomicUsize::new(0));
        let opened = Arc::clone(&opens);
        let thread = std::thread::Builder::new()
            .name("test-agents".into())
            .spawn(move || {
                let rt = Runtime::new().expect("start the agents' compio runtime");
                rt.block_on(async move {
                    let (wave_tx, wave_rx) = async_channel::unbounded();
                    let mut agents = agents.into_iter().enumerate().peekable();
                    while agents.peek().is_some() {
                        let mut started = 0;
                        for (index, (ep, behaviour)) in agents.by_ref().take(wave.max(1)) {
                            let (registered, ended, opens) = (wave_tx.clone(), ends_tx.clone(), opened.clone());
                            compio::runtime::spawn(run_agent(index, ep, behaviour, registered, ended, opens)).detach();
                            started += 1;
                        }
                        for _ in 0..started {
                            // Invariant: this task holds a sender, so the
                            // channel cannot close.
                            let result = wave_rx.recv().await.expect("a registration result");
                            let _ = registered_tx.send(result);
                        }
                    }
                    // A dropped sender also ends the wait.
                    let _ = stop_rx.await;
                });
                // Dropping the runtime drops every agent task and socket.
            })
            .expect("spawn the agents' thread");
        let agents = AgentThread {
            stop: Some(stop),
            ends,
            opens,
            thread: Some(thread),
        };
        let mut results: Vec<Option<Result<(), ClientError>>> = (0..count).map(|_| None).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..count {
            let left = deadline.saturating_duration_since(Instant::now());
            match registered_rx.recv_timeout(left) {
                Ok((index, result)) => results[index] = Some(result),
                Err(e) => panic!("agents did not all finish registering: {e}"),
            }
        }
        // Invariant: the loop above filled one result per agent or panicked.
        (
            agents,
            results.into_iter().map(|r| r.expect("a result per agent")).collect(),
        )
    }

    /// How many `OPEN` pushes the agents have received.
    pub fn opens(&self) -> usize {
        self.opens.load(Ordering::SeqCst)
    }

    /// Waits for an agent's channel to end.
    pub fn wait_end(&self, timeout: Duration) -> AgentEnd {
        self.ends
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no agent channel ended within {timeout:?}: {e}"))
    }

    /// Stops the agents and waits for their thread.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AgentThread {
    fn drop(&mut self) {
        self.shut();
    }
}

async fn run_agent(
    index: usize,
    ep: Endpoint,
    behaviour: Behaviour,
    registered: async_channel::Sender<(usize, Result<(), ClientError>)>,
    ended: mpsc::Sender<AgentEnd>,
    opens: Arc<AtomicUsize>,
) {
    let info = AgentInfo {
        mac: "02:00:00:00:00:01".into(),
        local_ip: "127.0.0.1".into(),
        os: "ringway integration test".into(),
    };
    let channel = match AgentChannel::register(&ep, &info).await {
        Ok(channel) => channel,
        Err(e) => {
            let _ = registered.send((index, Err(e))).await;
            return;
        }
    };
    let _ = registered.send((index, Ok(()))).await;
    // A cluster gateway may have sent the registration to another one:
    // sessions join where the channel is.
    let ep = channel.redirected().cloned().unwrap_or(ep);
    let handler = TestHandler {
        ep,
        behaviour,
        outgoing: channel.outgoing(),
        opens,
    };
    let end = channel.run(&handler).await.map_err(|e| e.to_string());
    let _ = ended.send((index, end));
}

/// The agents' [`AgentHandler`]: counts opens and serves or ignores them.
struct TestHandler {
    ep: Endpoint,
    behaviour: Behaviour,
    outgoing: Outgoing,
    opens: Arc<AtomicUsize>,
}

impl AgentHandler for TestHandler {
    fn open(&self, sid: SessionId) {
        self.opens.fetch_add(1, Ordering::SeqCst);
        if let Behaviour::Serve(service) = self.behaviour {
            let (ep, outgoing) = (self.ep.clone(), self.outgoing.clone());
            compio::runtime::spawn(serve_session(ep, service, outgoing, sid)).detach();
        }
    }
}

/// One session as `ringway agent` serves it: dial the service, join, relay.
async fn serve_session(ep: Endpoint, service: SocketAddr, outgoing: Outgoing, sid: SessionId) {
    let local = match compio::net::TcpStream::connect(service).await {
        Ok(s) => s,
        Err(_) => {
            outgoing.send(FromAgent::Fail(sid)).await;
            return;
        }
    };
    let _ = local.set_nodelay(true);
    let Ok(session) = client::join(&ep, sid).await else {
        return;
    };
    let counters = Counters::default();
    let _ = relay(
        &session.stream,
        session.early,
        &local,
        Vec::new(),
        AGENT_RELAY_BUFFER,
        &counters,
    )
    .await;
}
