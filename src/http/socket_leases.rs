//! The per-user socket limit across instances. Each open socket holds a
//! lease in Redis: a member of the sorted set `<queue>:doculearn:sockets:<user>`
//! scored by when it expires. A new socket is admitted (in one Lua script:
//! drop expired leases, count, add) only while the user holds fewer than
//! `websocket.max_sockets_per_user` leases on all instances together. Each
//! instance renews its sockets' leases in one pipeline every third of
//! `websocket.socket_lease_secs`, and drops a lease the moment its socket
//! closes; the sockets of an instance that crashed stop counting when their
//! leases expire.
//!
//! Redis unreachable: the socket is admitted (each instance's own limit
//! still holds) and a warning is logged; availability over strictness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::arq::now_ms;

/// KEYS[1] the user's set; ARGV now, expiry, member, limit, key TTL (ms).
const ACQUIRE_LUA: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"#;

/// The leases of this instance's sockets.
pub struct SocketLeases {
    redis: ConnectionManager,
    prefix: String,
    /// This process, in every member name.
    instance: String,
    limit: usize,
    ttl: Duration,
    acquire: Script,
    /// socket id → user, for renewal.
    live: Mutex<HashMap<u64, Uuid>>,
}

/// The outcome of asking for a lease.
#[derive(Debug, PartialEq, Eq)]
pub enum Lease {
    Granted,
    /// The user holds `limit` sockets on all instances together.
    Refused,
}

impl SocketLeases {
    pub fn new(redis: ConnectionManager, queue_name: &str, limit: usize, ttl: Duration) -> Arc<Self> {
        Arc::new(SocketLeases {
            redis,
            prefix: format!("{queue_name}:doculearn:sockets"),
            instance: Uuid::new_v4().simple().to_string(),
            limit,
            ttl: ttl.max(Duration::from_secs(1)),
            acquire: Script::new(ACQUIRE_LUA),
            live: Mutex::new(HashMap::new()),
        })
    }

    fn key(&self, user: Uuid) -> String {
        format!("{}:{user}", self.prefix)
    }

    fn member(&self, socket: u64) -> String {
        format!("{}:{socket}", self.instance)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A lease for this socket, if the user is under the limit cluster-wide.
    pub async fn acquire(&self, user: Uuid, socket: u64) -> Lease {
        let now = now_ms();
        let ttl = self.ttl.as_millis() as i64;
        let mut con = self.redis.clone();
        let granted: Result<i64, _> = self
            .acquire
            .key(self.key(user))
            .arg(now)
            .arg(now + ttl)
            .arg(self.member(socket))
            .arg(self.limit)
            .arg(ttl * 2)
            .invoke_async(&mut con)
            .await;
        match granted {
            Ok(0) => Lease::Refused,
            Ok(_) => {
                self.live.lock().expect("lease map").insert(socket, user);
                Lease::Granted
            }
            Err(e) => {
                tracing::warn!(user_id = %user, error = %e, "cannot check the cluster-wide socket limit; admitting the socket (this instance's limit holds)");
                self.live.lock().expect("lease map").insert(socket, user);
                Lease::Granted
            }
        }
    }

    /// Gives the socket's lease back (it closed).
    pub async fn release(&self, user: Uuid, socket: u64) {
        self.live.lock().expect("lease map").remove(&socket);
        let mut con = self.redis.clone();
        let removed: Result<i64, _> = redis::cmd("ZREM")
            .arg(self.key(user))
            .arg(self.member(socket))
            .query_async(&mut con)
            .await;
        if let Err(e) = removed {
            tracing::debug!(user_id = %user, error = %e, "cannot drop a socket lease; it expires by itself");
        }
    }

    /// Renews every live lease of this instance, in one pipeline: one ZADD
    /// and one PEXPIRE per user, whatever the number of that user's sockets
    /// (Redis serves everyone else's commands, progress among them, while it
    /// works through this; 10,000 sockets of 1,000 users are 2,000 commands,
    /// not 20,000).
    async fn renew(&self) -> Result<(), redis::RedisError> {
        let mut by_user: HashMap<Uuid, Vec<u64>> = HashMap::new();
        for (socket, user) in self.live.lock().expect("lease map").iter() {
            by_user.entry(*user).or_default().push(*socket);
        }
        if by_user.is_empty() {
            return Ok(());
        }
        let expiry = now_ms() + self.ttl.as_millis() as i64;
        let key_ttl = self.ttl.as_millis() as i64 * 2;
        let mut pipe = redis::pipe();
        for (user, sockets) in &by_user {
            // Added back if it was lost (Redis restarted): a moment over the
            // limit admits nobody new.
            let zadd = pipe.cmd("ZADD").arg(self.key(*user));
            for socket in sockets {
                zadd.arg(expiry).arg(self.member(*socket));
            }
            zadd.ignore();
            pipe.cmd("PEXPIRE").arg(self.key(*user)).arg(key_ttl).ignore();
        }
        let mut con = self.redis.clone();
        pipe.query_async::<()>(&mut con).await
    }

    /// Renews the leases every third of their lifetime until `stop`.
    pub async fn run_renewals(self: Arc<Self>, stop: CancellationToken) {
        let every = self.ttl / 3;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.renew().await {
                tracing::warn!(error = %e, "cannot renew socket leases; they expire if this lasts");
            }
        }
    }
}
