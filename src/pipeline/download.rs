//! The downloading stage: the document's bytes, from the database, or for a
//! URL document from the web, with the guards a server that fetches URLs
//! needs: http(s) only, every resolved address checked against loopback,
//! private, link-local and metadata ranges (also after each redirect, and the
//! connection pinned to the checked address), a size and a time limit.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::extract::sniff;
use super::StageError;
use crate::config::PipelineSettings;
use crate::db::{self, DocumentSource};

/// The document's bytes, fetching and keeping them first for a URL document.
pub async fn content(db: &PgPool, src: &DocumentSource, cfg: &PipelineSettings) -> Result<Vec<u8>, StageError> {
    if src.has_content {
        return db::document_content(db, src.id)
            .await?
            .ok_or_else(|| StageError::permanent("the document's content is missing"));
    }
    let Some(url) = &src.source_url else {
        return Err(StageError::permanent("the document has neither content nor a URL"));
    };
    let bytes = fetch_url(url, cfg).await?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let kind = sniff::sniff(&bytes, url, "");
    db::save_downloaded(db, src.id, &bytes, &sha, kind.mime()).await?;
    Ok(bytes)
}

/// Is this address one a server-side fetch must never reach by default?
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local() // 169.254/16, includes cloud metadata 169.254.169.254
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (seg[0] == 0x64 && seg[1] == 0xff9b) // NAT64 can reach private v4
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        }
    }
}

fn allowed_by_config(host: &str, port: u16, cfg: &PipelineSettings) -> bool {
    let with_port = format!("{host}:{port}");
    cfg.url_allow_private
        .iter()
        .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(&with_port))
}

/// Fetches a URL within the configured limits.
pub async fn fetch_url(url: &str, cfg: &PipelineSettings) -> Result<Vec<u8>, StageError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cfg.download_timeout_secs);
    let mut current =
        reqwest::Url::parse(url).map_err(|_| StageError::permanent(format!("“{url}” is not a valid URL")))?;
    for _hop in 0..=5 {
        if !matches!(current.scheme(), "http" | "https") {
            return Err(StageError::permanent(format!(
                "only http and https URLs can be fetched, not {}:",
                current.scheme()
            )));
        }
        let host = current
            .host_str()
            .ok_or_else(|| StageError::permanent("the URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = current.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::time::timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| StageError::permanent(format!("looking up {host} took too long")))?
            .map_err(|_| StageError::permanent(format!("the host {host} does not exist")))?
            .collect();
        let Some(first) = addrs.first().copied() else {
            return Err(StageError::permanent(format!("the host {host} has no address")));
        };
        if !allowed_by_config(&host, port, cfg) {
            if let Some(bad) = addrs.iter().find(|a| is_forbidden(a.ip())) {
                return Err(StageError::permanent(format!(
                    "the URL points to a local or private address ({}), which doculearn does not fetch",
                    bad.ip()
                )));
            }
        }
        // Pin the connection to the address we checked (no second DNS answer).
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, first)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|_| StageError::transient("cannot build an HTTP client"))?;
        let response = tokio::time::timeout_at(deadline, client.get(current.clone()).send())
            .await
            .map_err(|_| StageError::permanent("the download took longer than the time limit"))?
            .map_err(|e| {
                if e.is_connect() {
                    StageError::transient(format!("cannot connect to {host}"))
                } else {
                    StageError::transient(format!("the download from {host} failed"))
                }
            })?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| StageError::permanent("the server redirected without a Location"))?;
            current = current
                .join(location)
                .map_err(|_| StageError::permanent("the server redirected to an invalid URL"))?;
            continue;
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(StageError::transient(format!(
                "the server answered HTTP {}",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(StageError::permanent(format!(
                "the server answered HTTP {}",
                status.as_u16()
            )));
        }
        if let Some(len) = response.content_length() {
            if len > cfg.max_download_bytes {
                return Err(StageError::permanent(format!(
                    "the file is {}; the download limit is {}",
                    crate::units::human_bytes(len),
                    crate::units::human_bytes(cfg.max_download_bytes)
                )));
            }
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next())
                .await
                .map_err(|_| StageError::permanent("the download took longer than the time limit"))?;
            let Some(piece) = next else { break };
            let piece = piece.map_err(|_| StageError::transient(format!("the download from {host} broke off")))?;
            if body.len() as u64 + piece.len() as u64 > cfg.max_download_bytes {
                return Err(StageError::permanent(format!(
                    "the file is larger than the download limit of {}",
                    crate::units::human_bytes(cfg.max_download_bytes)
                )));
            }
            body.extend_from_slice(&piece);
        }
        return Ok(body);
    }
    Err(StageError::permanent("the URL redirected more than 5 times"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }
}
