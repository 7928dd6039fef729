//! Running probe checks and lifecycle hooks: httpGet, tcpSocket, exec and sleep.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerPort, ExecAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::command::{self, Program};
use crate::env::EnvList;
use crate::process::{self, Launch};

/// What an action needs to know about its container.
#[derive(Clone, Debug)]
pub struct Target {
    pub pod_ip: String,
    pub ports: Vec<ContainerPort>,
    /// The container process's environment (exec actions run with it).
    pub env: Vec<(String, String)>,
    /// The container's literal `env` values: exec commands may refer to them with `$(VAR)`, as
    /// the kubelet's "static" expansion allows.
    pub static_env: EnvList,
    pub working_dir: Option<PathBuf>,
    pub bin_dirs: Vec<PathBuf>,
    pub search_path: String,
    /// Leader PID of the running container, whose mount namespace exec actions enter.
    pub pid: u32,
    /// Kubernetes minor version for the probe User-Agent.
    pub user_agent: String,
}

/// One check or hook.
#[derive(Clone, Debug)]
pub enum Action {
    Http(HTTPGetAction),
    Tcp(TCPSocketAction),
    Exec(ExecAction),
    Sleep(Duration),
    Unsupported(&'static str),
}

impl Action {
    pub fn from_probe(probe: &Probe) -> Self {
        let handler = Self::common(
            probe.http_get.as_ref(),
            probe.tcp_socket.as_ref(),
            probe.exec.as_ref(),
        );
        handler.unwrap_or(Action::Unsupported(if probe.grpc.is_some() {
            "gRPC probes are not supported by vigil-testkubelet"
        } else {
            "probe has no handler"
        }))
    }

    pub fn from_hook(hook: &LifecycleHandler) -> Self {
        let handler = Self::common(
            hook.http_get.as_ref(),
            hook.tcp_socket.as_ref(),
            hook.exec.as_ref(),
        );
        handler.unwrap_or_else(|| match &hook.sleep {
            Some(s) => Action::Sleep(Duration::from_secs(s.seconds.max(0) as u64)),
            None => Action::Unsupported("hook has no handler"),
        })
    }

    /// The handlers probes and hooks both have, in the kubelet's order: the first one set wins.
    fn common(
        http: Option<&HTTPGetAction>,
        tcp: Option<&TCPSocketAction>,
        exec: Option<&ExecAction>,
    ) -> Option<Self> {
        http.cloned()
            .map(Action::Http)
            .or_else(|| tcp.cloned().map(Action::Tcp))
            .or_else(|| exec.cloned().map(Action::Exec))
    }

    /// Runs the action once within `timeout`; `Err` carries a human-readable failure.
    pub async fn run(&self, target: &Target, timeout: Duration) -> Result<(), String> {
        match self {
            Action::Http(h) => {
                let host = nonempty(h.host.as_deref()).unwrap_or(&target.pod_ip);
                let port = resolve_port(&h.port, &target.ports)?;
                if h.scheme
                    .as_deref()
                    .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
                {
                    return Err("only HTTP scheme is supported by vigil-testkubelet".into());
                }
                let path = h.path.as_deref().unwrap_or("/");
                let headers: Vec<(String, String)> = h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|hh| (hh.name.clone(), hh.value.clone()))
                    .collect();
                tokio::time::timeout(
                    timeout,
                    http_get(host, port, path, &headers, &target.user_agent),
                )
                .await
                .map_err(|_| {
                    format!("Get \"http://{host}:{port}{path}\": timeout after {timeout:?}")
                })?
            }
            Action::Tcp(t) => {
                let host = nonempty(t.host.as_deref()).unwrap_or(&target.pod_ip);
                let port = resolve_port(&t.port, &target.ports)?;
                match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
                    Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
                }
            }
            Action::Exec(e) => run_exec(e, target, timeout).await,
            Action::Sleep(d) => {
                tokio::time::sleep((*d).min(timeout)).await;
                Ok(())
            }
            Action::Unsupported(why) => Err((*why).to_string()),
        }
    }
}

fn nonempty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// A probe port is a number or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok())
            .ok_or_else(|| format!("couldn't find port {name:?} in the container's ports")),
    }
}

/// A minimal HTTP/1.1 GET: success is a status in 200..400, as for the kubelet.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    agent: &str,
) -> Result<(), String> {
    let url = format!("http://{host}:{port}{path}");
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"{url}\": dial tcp {host}:{port}: {e}"))?;
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("Host") {
        request.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !has("User-Agent") {
        request.push_str(&format!("User-Agent: {agent}\r\n"));
    }
    if !has("Accept") {
        request.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;

    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

async fn run_exec(action: &ExecAction, target: &Target, timeout: Duration) -> Result<(), String> {
    let argv: Vec<String> = action
        .command
        .iter()
        .flatten()
        .map(|a| target.static_env.expand(a))
        .collect();
    let Some((first, rest)) = argv.split_first() else {
        return Err("exec action has no command".into());
    };
    let path = command::find(first, &target.bin_dirs, &target.search_path)
        .ok_or_else(|| format!("executable {first:?} not found"))?;
    let program = Program {
        path,
        args: rest.to_vec(),
    };
    let launch = Launch {
        program: &program,
        env: &target.env,
        working_dir: target.working_dir.as_deref(),
    };
    let child = process::spawn_in_container(&launch, target.pid)
        .map_err(|e| format!("exec {first}: {e}"))?;
    match process::run_to_completion(child, timeout).await {
        Some((status, _)) if status.success() => Ok(()),
        Some((status, output)) => {
            let (code, _) = process::exit_info(status);
            Err(format!(
                "command {argv:?} exited with {code}: {}",
                output.trim()
            ))
        }
        None => Err(format!("command {argv:?} timed out after {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_by_number_and_name() {
        let ports = vec![ContainerPort {
            name: Some("redis".into()),
            container_port: 6379,
            ..Default::default()
        }];
        assert_eq!(resolve_port(&IntOrString::Int(8080), &ports), Ok(8080));
        assert_eq!(
            resolve_port(&IntOrString::String("redis".into()), &ports),
            Ok(6379)
        );
        assert!(resolve_port(&IntOrString::String("http".into()), &ports).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &ports).is_err());
    }

    #[tokio::test]
    async fn http_and_tcp_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable", "200 OK"] {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let target = Target {
            pod_ip: "127.0.0.1".into(),
            ports: vec![],
            env: vec![],
            static_env: EnvList::default(),
            working_dir: None,
            bin_dirs: vec![],
            search_path: String::new(),
            pid: 0,
            user_agent: "kube-probe/1.33".into(),
        };
        let http = Action::Http(HTTPGetAction {
            port: IntOrString::Int(port as i32),
            path: Some("/healthz".into()),
            ..Default::default()
        });
        let t = Duration::from_secs(2);
        assert_eq!(http.run(&target, t).await, Ok(()));
        assert!(http.run(&target, t).await.unwrap_err().contains("503"));
        let tcp = Action::Tcp(TCPSocketAction {
            port: IntOrString::Int(port as i32),
            host: None,
        });
        assert_eq!(tcp.run(&target, t).await, Ok(()));
    }
}
