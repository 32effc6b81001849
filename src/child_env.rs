//! The environment each generation of the command (and each hook) receives.
//!
//! Removed from what graceful-run inherited, because it describes fds or sockets the child
//! does not get (a stale LISTEN_PIDFDID makes libsystemd drop the sockets; a stale
//! LISTEN_FDS_FIRST_FD sends Rust's listenfd to the wrong fds): LISTEN_FDS, LISTEN_PID,
//! LISTEN_FDNAMES, LISTEN_PIDFDID, LISTEN_FDS_FIRST_FD, NOTIFY_SOCKET (graceful-run's own
//! channel to its supervisor), WATCHDOG_USEC and WATCHDOG_PID (systemd's watchdog of
//! graceful-run itself: a child that pinged it would ping a socket it does not have),
//! SERVER_STARTER_*, EINHORN_*, and graceful-run's own
//! configuration GRACEFUL_RUN_* (so a nested graceful-run does not pick it up).
//!
//! Added per generation: LISTEN_FDS and LISTEN_FDNAMES when there are sockets (LISTEN_PID is
//! written by `spawn` in the child itself), the generation's NOTIFY_SOCKET with
//! `--ready notify`, and the `--compat` variables. WATCHDOG_USEC (`--watchdog`) is added by the
//! executor with the NOTIFY_SOCKET it goes with, WATCHDOG_PID by `spawn`. With `--user`: HOME, USER and LOGNAME from
//! the password database, as systemd's `User=` and gosu do.

use std::ffi::OsString;

use crate::cli::Compat;
use crate::listen::{Address, Bound, Host, Listeners};
use crate::spawn::{Credentials, env_entry, env_key};

/// Inherited variables that graceful-run never passes on.
fn is_stripped(key: &[u8]) -> bool {
    const EXACT: &[&[u8]] = &[
        b"LISTEN_FDS",
        b"LISTEN_PID",
        b"LISTEN_FDNAMES",
        b"LISTEN_PIDFDID",
        b"LISTEN_FDS_FIRST_FD",
        b"NOTIFY_SOCKET",
        b"WATCHDOG_USEC",
        b"WATCHDOG_PID",
    ];
    const PREFIXES: &[&[u8]] = &[b"GRACEFUL_RUN_", b"SERVER_STARTER_", b"EINHORN_"];
    EXACT.contains(&key) || PREFIXES.iter().any(|prefix| key.starts_with(prefix))
}

/// The environment shared by every spawn, prepared once.
pub struct ChildEnv {
    base: Vec<OsString>,
}

impl ChildEnv {
    pub fn new(inherited: Vec<OsString>, user: Option<&Credentials>) -> ChildEnv {
        let replaced: &[&[u8]] = if user.is_some() {
            &[b"HOME", b"USER", b"LOGNAME"]
        } else {
            &[]
        };
        let mut base: Vec<OsString> = inherited
            .into_iter()
            .filter(|entry| {
                let key = env_key(entry);
                !is_stripped(key) && !replaced.contains(&key)
            })
            .collect();
        if let Some(user) = user {
            base.push(env_entry("HOME", &user.home));
            base.push(env_entry("USER", &user.name));
            base.push(env_entry("LOGNAME", &user.name));
        }
        ChildEnv { base }
    }

    /// The environment of worker `worker` of generation `generation`, except LISTEN_PID.
    /// GRACEFUL_RUN_WORKER (0 to N-1) and GRACEFUL_RUN_GENERATION tell a worker which one it
    /// is, as einhorn's EINHORN_CHILD_INDEX and pm2's NODE_APP_INSTANCE do.
    pub fn for_generation(
        &self,
        listeners: &Listeners,
        generation: u64,
        worker: u32,
        notify_socket: Option<&str>,
        compat: &[Compat],
    ) -> Vec<OsString> {
        let mut env = self.base.clone();
        env.push(env_entry("GRACEFUL_RUN_WORKER", worker.to_string()));
        env.push(env_entry("GRACEFUL_RUN_GENERATION", generation.to_string()));
        if !listeners.is_empty() {
            env.push(env_entry("LISTEN_FDS", listeners.len().to_string()));
            let names: Vec<&str> = listeners.iter().map(|l| l.fd_name()).collect();
            env.push(env_entry("LISTEN_FDNAMES", names.join(":")));
        }
        if let Some(address) = notify_socket {
            env.push(env_entry("NOTIFY_SOCKET", address));
        }
        for protocol in compat {
            match protocol {
                Compat::ServerStarter => {
                    env.push(env_entry(
                        "SERVER_STARTER_PORT",
                        server_starter_port(listeners),
                    ));
                    env.push(env_entry(
                        "SERVER_STARTER_GENERATION",
                        generation.to_string(),
                    ));
                }
                Compat::Einhorn => env.extend(einhorn(listeners)),
            }
        }
        env
    }

    /// The environment of a hook: the shared one plus `extra`.
    pub fn for_hook(&self, extra: &[(&str, String)]) -> Vec<OsString> {
        let mut env = self.base.clone();
        env.extend(extra.iter().map(|(key, value)| env_entry(key, value)));
        env
    }
}

/// `SERVER_STARTER_PORT`, as Server::Starter's start_server writes it: `PORT=fd` for a bare
/// port, `HOST:PORT=fd`, `[IPV6]:PORT=fd`, `/path=fd`, joined with `;`.
fn server_starter_port(listeners: &Listeners) -> String {
    listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| {
            let fd = 3 + i;
            let key = match (&listener.spec.address, &listener.bound) {
                (
                    Address::Tcp(Host::Any, _) | Address::Udp(Host::Any, _),
                    Bound::Tcp(a) | Bound::Udp(a),
                ) => a.port().to_string(),
                (
                    Address::Tcp(Host::Name(name), _) | Address::Udp(Host::Name(name), _),
                    Bound::Tcp(a) | Bound::Udp(a),
                ) => {
                    format!("{name}:{}", a.port())
                }
                (_, Bound::Tcp(a) | Bound::Udp(a)) => a.to_string(),
                (_, Bound::Unix(path)) => path.display().to_string(),
                (_, Bound::Abstract(name)) => format!("@{}", String::from_utf8_lossy(name)),
            };
            format!("{key}={fd}")
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// einhorn's variables: the fds as the child sees them.
fn einhorn(listeners: &Listeners) -> Vec<OsString> {
    let fds: Vec<String> = (0..listeners.len()).map(|i| (3 + i).to_string()).collect();
    let mut env = vec![
        env_entry("EINHORN_FD_COUNT", fds.len().to_string()),
        env_entry("EINHORN_FDS", fds.join(" ")),
        env_entry("EINHORN_MASTER_PID", std::process::id().to_string()),
    ];
    for (i, fd) in fds.iter().enumerate() {
        env.push(env_entry(&format!("EINHORN_FD_{i}"), fd));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_protocol_variables_are_removed() {
        let inherited = [
            "PATH=/bin",
            "LISTEN_FDS=9",
            "LISTEN_PID=1",
            "LISTEN_PIDFDID=77",
            "LISTEN_FDS_FIRST_FD=7",
            "NOTIFY_SOCKET=/run/systemd/notify",
            "WATCHDOG_USEC=30000000",
            "WATCHDOG_PID=1",
            "GRACEFUL_RUN_LISTEN=8080",
            "SERVER_STARTER_PORT=80=3",
            "EINHORN_FDS=3",
            "HOME=/root",
        ]
        .map(OsString::from)
        .to_vec();
        let env = ChildEnv::new(inherited, None).for_hook(&[]);
        assert_eq!(env, ["PATH=/bin", "HOME=/root"].map(OsString::from));
    }

    #[test]
    fn user_sets_home_user_logname() {
        let user = Credentials {
            name: "app".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            home: "/home/app".into(),
        };
        let env =
            ChildEnv::new(vec!["HOME=/root".into(), "USER=root".into()], Some(&user)).for_hook(&[]);
        assert_eq!(
            env,
            ["HOME=/home/app", "USER=app", "LOGNAME=app"].map(OsString::from)
        );
    }

    #[test]
    fn generation_env_describes_the_sockets() {
        let specs: Vec<_> = ["127.0.0.1:0,name=web", "0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let listeners = Listeners::bind(&specs).unwrap();
        let env = ChildEnv::new(vec![], None).for_generation(
            &listeners,
            4,
            2,
            Some("@x"),
            &[Compat::ServerStarter, Compat::Einhorn],
        );
        let text: Vec<String> = env
            .iter()
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        assert!(text.contains(&"LISTEN_FDS=2".to_string()));
        assert!(text.contains(&"LISTEN_FDNAMES=web:unknown".to_string()));
        assert!(text.contains(&"NOTIFY_SOCKET=@x".to_string()));
        assert!(text.contains(&"SERVER_STARTER_GENERATION=4".to_string()));
        assert!(text.contains(&"GRACEFUL_RUN_GENERATION=4".to_string()));
        assert!(text.contains(&"GRACEFUL_RUN_WORKER=2".to_string()));
        assert!(text.contains(&"EINHORN_FDS=3 4".to_string()));
        assert!(text.contains(&"EINHORN_FD_1=4".to_string()));
        let port = text
            .iter()
            .find(|e| e.starts_with("SERVER_STARTER_PORT="))
            .unwrap();
        let entries: Vec<&str> = port["SERVER_STARTER_PORT=".len()..].split(';').collect();
        assert!(
            entries[0].starts_with("127.0.0.1:") && entries[0].ends_with("=3"),
            "{port}"
        );
        assert!(
            !entries[1].contains(':') && entries[1].ends_with("=4"),
            "{port}"
        );
    }
}
