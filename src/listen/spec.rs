//! The `--listen SPEC` grammar, parsed without touching the system.
//!
//! ```text
//! SPEC    := ADDRESS ("," OPTION)*
//! ADDRESS := PORT | ":" PORT | HOST ":" PORT | "[" IPV6 "]" ":" PORT      TCP
//!          | "tcp://" HOSTPORT | "udp://" HOSTPORT                      URL style
//!          | "unix:" PATH | "unix://" PATH | PATH-WITH-SLASH | "@" NAME   unix stream
//!          | ("tcp" | "http" | "https" | "udp" | "unix") "::" VALUE        systemfd style
//! OPTION  := "name=" NAME | "backlog=" N | "mode=" OCTAL | "reuseport"
//! ```
//!
//! A bare port binds every interface, dual-stack, like systemd's `ListenStream=8080`: right for
//! a container entrypoint. systemfd binds a bare port to 127.0.0.1 instead, and a script
//! written for systemfd (`-s http::3000`) expects that, so the systemfd spelling keeps
//! systemfd's meaning. An explicit IPv6 address is IPv6-only, as nginx does, so that
//! `-l [::]:80 -l 0.0.0.0:80` binds both.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// The longest unix socket path: `sun_path` is 108 bytes with its terminating NUL.
const UNIX_PATH_MAX: usize = 107;
/// sd_listen_fds_with_names(3): a name is at most 255 bytes, no `:` and no control characters.
const NAME_MAX: usize = 255;

/// One listening socket as the user asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// The text as written, for messages.
    pub text: String,
    pub address: Address,
    /// Goes to LISTEN_FDNAMES.
    pub name: Option<String>,
    pub backlog: Option<i32>,
    /// Permission bits of a unix socket file.
    pub mode: Option<u32>,
    pub reuseport: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp(Host, u16),
    Udp(Host, u16),
    /// A unix stream socket at a filesystem path.
    Unix(PathBuf),
    /// A unix stream socket in the abstract namespace (the name without its leading NUL).
    Abstract(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// Every interface: `[::]` dual-stack, or 0.0.0.0 where IPv6 is unavailable.
    Any,
    Ip(IpAddr),
    /// A name resolved when the socket is bound, e.g. `localhost`.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Any => Ok(()),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl std::str::FromStr for ListenSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenSpec, String> {
        if text.trim().is_empty() {
            return Err("empty address".into());
        }
        let mut parts = text.split(',');
        let address_text = parts.next().unwrap_or_default();
        let address = parse_address(address_text)?;
        let mut spec = ListenSpec {
            text: text.to_string(),
            address,
            name: None,
            backlog: None,
            mode: None,
            reuseport: false,
        };
        for option in parts {
            apply_option(&mut spec, option)?;
        }
        Ok(spec)
    }
}

fn parse_address(text: &str) -> Result<Address, String> {
    // systemfd: TYPE::VALUE, where a bare port means 127.0.0.1.
    if let Some((kind, value)) = text.split_once("::")
        && matches!(kind, "tcp" | "http" | "https" | "udp" | "unix")
    {
        let localhost = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        return match kind {
            "unix" => unix_address(value),
            "udp" => host_port(value, localhost).map(|(h, p)| Address::Udp(h, p)),
            _ => host_port(value, localhost).map(|(h, p)| Address::Tcp(h, p)),
        };
    }
    if let Some(rest) = text.strip_prefix("tcp://") {
        return host_port(rest, Host::Any).map(|(h, p)| Address::Tcp(h, p));
    }
    if let Some(rest) = text.strip_prefix("udp://") {
        return host_port(rest, Host::Any).map(|(h, p)| Address::Udp(h, p));
    }
    if let Some(rest) = text.strip_prefix("unix://") {
        return unix_address(rest);
    }
    if let Some(rest) = text.strip_prefix("unix:") {
        return unix_address(rest);
    }
    if let Some((scheme, _)) = text.split_once("://")
        && !scheme.is_empty()
        && scheme.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "unknown scheme '{scheme}://' (use tcp://, udp:// or unix:)"
        ));
    }
    if text.starts_with('@') || text.contains('/') {
        return unix_address(text);
    }
    host_port(text, Host::Any).map(|(h, p)| Address::Tcp(h, p))
}

fn unix_address(text: &str) -> Result<Address, String> {
    if let Some(name) = text.strip_prefix('@') {
        if name.is_empty() {
            return Err("empty abstract socket name after '@'".into());
        }
        if name.len() > UNIX_PATH_MAX {
            return Err(format!(
                "abstract socket name is {} bytes, the limit is {UNIX_PATH_MAX}",
                name.len()
            ));
        }
        return Ok(Address::Abstract(name.as_bytes().to_vec()));
    }
    if text.is_empty() {
        return Err("empty unix socket path".into());
    }
    if text.len() > UNIX_PATH_MAX {
        return Err(format!(
            "unix socket path is {} bytes, the limit is {UNIX_PATH_MAX}",
            text.len()
        ));
    }
    if text.contains('\0') {
        return Err("unix socket path contains a NUL byte".into());
    }
    Ok(Address::Unix(PathBuf::from(text)))
}

/// `PORT`, `:PORT`, `HOST:PORT` or `[IPV6]:PORT`; `bare` is the host of a bare port.
fn host_port(text: &str, bare: Host) -> Result<(Host, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, port) = rest
            .split_once("]:")
            .ok_or("expected [IPV6]:PORT, e.g. [::1]:8080")?;
        let ip: std::net::Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("'{ip}' is not an IPv6 address"))?;
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        match text.rsplit_once(':') {
            None => (bare, text),
            Some(("", port)) => (bare, port),
            Some((host, _)) if host.contains(':') => {
                return Err("put an IPv6 address in brackets, e.g. [::1]:8080".into());
            }
            Some((host, port)) => match host.parse::<IpAddr>() {
                Ok(ip) => (Host::Ip(ip), port),
                Err(_) if valid_hostname(host) => (Host::Name(host.to_string()), port),
                Err(_) => return Err(format!("'{host}' is not an IP address or host name")),
            },
        }
    };
    Ok((host, parse_port(port)?))
}

fn valid_hostname(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err("missing port".into());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{text}' is not a port number"));
    }
    text.parse::<u16>()
        .map_err(|_| format!("port {text} is outside 0-65535"))
}

fn apply_option(spec: &mut ListenSpec, option: &str) -> Result<(), String> {
    let (key, value) = match option.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (option, None),
    };
    let is_unix = matches!(spec.address, Address::Unix(_) | Address::Abstract(_));
    match (key, value) {
        ("name", Some(name)) => {
            validate_name(name)?;
            spec.name = Some(name.to_string());
        }
        ("backlog", Some(n)) => {
            let backlog = n
                .parse::<i32>()
                .ok()
                .filter(|b| *b >= 1)
                .ok_or_else(|| format!("backlog '{n}' is not a positive number"))?;
            spec.backlog = Some(backlog);
        }
        ("mode", Some(mode)) => {
            if !matches!(spec.address, Address::Unix(_)) {
                return Err("mode= applies only to unix socket paths".into());
            }
            let bits = u32::from_str_radix(mode, 8)
                .ok()
                .filter(|bits| *bits <= 0o777)
                .ok_or_else(|| format!("mode '{mode}' is not octal permission bits like 0660"))?;
            spec.mode = Some(bits);
        }
        ("reuseport", None) => {
            if is_unix {
                return Err("reuseport applies only to TCP and UDP sockets".into());
            }
            spec.reuseport = true;
        }
        ("name" | "backlog" | "mode", None) => return Err(format!("option '{key}' needs =VALUE")),
        ("reuseport", Some(_)) => return Err("option 'reuseport' takes no value".into()),
        ("", _) => return Err("empty option after ','".into()),
        _ => {
            return Err(format!(
                "unknown option '{key}' (known: name=, backlog=, mode=, reuseport)"
            ));
        }
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "name is {} bytes, the limit is {NAME_MAX}",
            name.len()
        ));
    }
    if name.contains(':') || name.chars().any(char::is_control) {
        return Err(format!(
            "name '{name}' may not contain ':' or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn address(text: &str) -> Address {
        text.parse::<ListenSpec>().unwrap().address
    }

    fn error(text: &str) -> String {
        text.parse::<ListenSpec>().unwrap_err()
    }

    #[test]
    fn bare_ports_bind_every_interface() {
        assert_eq!(address("8080"), Address::Tcp(Host::Any, 8080));
        assert_eq!(address(":8080"), Address::Tcp(Host::Any, 8080));
        assert_eq!(address("tcp://:0"), Address::Tcp(Host::Any, 0));
    }

    #[test]
    fn explicit_hosts() {
        assert_eq!(
            address("127.0.0.1:80"),
            Address::Tcp(Host::Ip("127.0.0.1".parse().unwrap()), 80)
        );
        assert_eq!(
            address("[::1]:80"),
            Address::Tcp(Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), 80)
        );
        assert_eq!(
            address("tcp://localhost:80"),
            Address::Tcp(Host::Name("localhost".into()), 80)
        );
        assert_eq!(
            address("udp://0.0.0.0:53"),
            Address::Udp(Host::Ip("0.0.0.0".parse().unwrap()), 53)
        );
    }

    #[test]
    fn unix_spellings() {
        let path = Address::Unix(PathBuf::from("/run/app.sock"));
        assert_eq!(address("unix:/run/app.sock"), path);
        assert_eq!(address("unix:///run/app.sock"), path);
        assert_eq!(address("/run/app.sock"), path);
        assert_eq!(address("unix::/run/app.sock"), path);
        assert_eq!(
            address("./app.sock"),
            Address::Unix(PathBuf::from("./app.sock"))
        );
        assert_eq!(address("@app"), Address::Abstract(b"app".to_vec()));
        assert_eq!(address("unix:@app"), Address::Abstract(b"app".to_vec()));
    }

    #[test]
    fn systemfd_spellings_keep_systemfd_meaning() {
        let localhost = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(address("tcp::3000"), Address::Tcp(localhost.clone(), 3000));
        assert_eq!(address("http::3000"), Address::Tcp(localhost.clone(), 3000));
        assert_eq!(
            address("https::3000"),
            Address::Tcp(localhost.clone(), 3000)
        );
        assert_eq!(address("udp::3000"), Address::Udp(localhost, 3000));
        assert_eq!(
            address("http::0.0.0.0:3000"),
            Address::Tcp(Host::Ip("0.0.0.0".parse().unwrap()), 3000)
        );
    }

    #[test]
    fn options() {
        let spec: ListenSpec = "unix:/tmp/a.sock,name=web,backlog=16,mode=0660"
            .parse()
            .unwrap();
        assert_eq!(spec.name.as_deref(), Some("web"));
        assert_eq!(spec.backlog, Some(16));
        assert_eq!(spec.mode, Some(0o660));
        let spec: ListenSpec = "8080,reuseport".parse().unwrap();
        assert!(spec.reuseport);
    }

    #[test]
    fn errors_say_why() {
        assert!(error("99999").contains("outside 0-65535"));
        assert!(error("abc").contains("not a port"));
        assert!(error("::1:80").contains("brackets"));
        assert!(error("8080,bogus").contains("unknown option"));
        assert!(error("8080,name=a:b").contains("':'"));
        assert!(error("8080,mode=0660").contains("only to unix"));
        assert!(error("unix:/a,reuseport").contains("only to TCP"));
        assert!(error("8080,backlog=0").contains("positive"));
        assert!(error("/x,mode=999").contains("octal"));
        assert!(error("ftp://x:1").contains("unknown scheme"));
        assert!(error(&format!("/{}", "a".repeat(200))).contains("limit"));
        assert!(error("").contains("empty"));
        assert!(error("8080,").contains("empty option"));
    }
}
