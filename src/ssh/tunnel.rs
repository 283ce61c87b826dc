//! The DM API through the jump host, as TiUP does it: a small HTTP proxy on this machine's
//! loopback that sends each request over a channel the jump host forwards. HTTPS goes through
//! it as `CONNECT` (TLS stays end to end, with the cluster's certificates); plain HTTP as
//! requests in absolute form, one per connection.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::HostSession;

/// A request head bigger than this is not one of ours.
const MAX_HEAD: usize = 16 * 1024;

/// A running proxy; dropping it stops it.
pub struct HttpTunnel {
    url: String,
    accepting: JoinHandle<()>,
}

impl HttpTunnel {
    /// Listens on a free port of 127.0.0.1 and forwards through `jump`.
    pub async fn start(jump: HostSession) -> std::io::Result<HttpTunnel> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let jump = jump.clone();
                tokio::spawn(async move {
                    if let Err(err) = serve(client, &jump).await {
                        tracing::debug!("HTTP through the jump host {}: {err}", jump.endpoint());
                    }
                });
            }
        });
        Ok(HttpTunnel { url, accepting })
    }

    /// The proxy URL for the HTTP client (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for HttpTunnel {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// One client connection: its request head says where to, the rest is copied both ways.
async fn serve(mut client: TcpStream, jump: &HostSession) -> std::io::Result<()> {
    let (head, early) = read_head(&mut client).await?;
    let Some(request) = Request::parse(&head) else {
        return respond(&mut client, "400 Bad Request", "not a proxy request").await;
    };
    let mut upstream = match jump.forward(&request.host, request.port).await {
        Ok(upstream) => upstream,
        Err(err) => return respond(&mut client, "502 Bad Gateway", &err.to_string()).await,
    };
    tracing::debug!(
        "{} {}:{} through {}",
        request.method,
        request.host,
        request.port,
        jump.endpoint()
    );
    match &request.origin_head {
        None => client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?,
        Some(origin_head) => upstream.write_all(origin_head.as_bytes()).await?,
    }
    upstream.write_all(&early).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Reads up to the end of the request head; returns it and whatever came after it.
async fn read_head(client: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buffer).into_owned(), rest));
        }
        if buffer.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let mut chunk = [0u8; 2048];
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

async fn respond(client: &mut TcpStream, status: &str, message: &str) -> std::io::Result<()> {
    let body = format!("{message}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: \
         close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await
}

/// What a proxy request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    host: String,
    port: u16,
    /// For a plain HTTP request, its head as the server expects it (origin form); `None` for
    /// `CONNECT`.
    origin_head: Option<String>,
}

impl Request {
    fn parse(head: &str) -> Option<Request> {
        let (request_line, headers) = head.split_once("\r\n")?;
        let mut words = request_line.split(' ');
        let (method, target, version) = (words.next()?, words.next()?, words.next()?);
        if method == "CONNECT" {
            let (host, port) = split_authority(target)?;
            return Some(Request { method: method.into(), host, port, origin_head: None });
        }
        let rest = target.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, "/"),
        };
        let (host, port) = split_authority(authority)?;
        let origin_head = format!("{method} {path} {version}\r\n{headers}");
        Some(Request { method: method.into(), host, port, origin_head: Some(origin_head) })
    }
}

/// `host:port` or `[v6]:port`.
fn split_authority(authority: &str) -> Option<(String, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Some((host.to_owned(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_requests_name_the_endpoint() {
        let request = Request::parse("CONNECT 127.0.9.3:8261 HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        assert_eq!((request.host.as_str(), request.port), ("127.0.9.3", 8261));
        assert_eq!(request.origin_head, None);
        let v6 = Request::parse("CONNECT [::1]:8262 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8262));
    }

    #[test]
    fn plain_requests_are_rewritten_to_origin_form() {
        let head = "GET http://127.0.9.3:8261/apis/v1alpha1/members?leader=true HTTP/1.1\r\n\
                    host: 127.0.9.3:8261\r\naccept: */*\r\n\r\n";
        let request = Request::parse(head).unwrap();
        assert_eq!((request.host.as_str(), request.port), ("127.0.9.3", 8261));
        assert_eq!(
            request.origin_head.unwrap(),
            "GET /apis/v1alpha1/members?leader=true HTTP/1.1\r\nhost: 127.0.9.3:8261\r\n\
             accept: */*\r\n\r\n"
        );
        assert_eq!(
            Request::parse("GET http://127.0.9.3:8261 HTTP/1.1\r\n\r\n").unwrap().origin_head,
            Some("GET / HTTP/1.1\r\n\r\n".to_owned())
        );
    }

    #[test]
    fn what_is_not_a_proxy_request_is_refused() {
        assert_eq!(Request::parse("GET /members HTTP/1.1\r\n\r\n"), None);
        assert_eq!(Request::parse("CONNECT nowhere HTTP/1.1\r\n\r\n"), None);
        assert_eq!(Request::parse("garbage"), None);
    }
}
