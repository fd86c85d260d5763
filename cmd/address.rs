//! Addresses given to the client subcommands (`check`, `bench`): `HOST:PORT` or
//! `http://HOST:PORT`, where a wildcard listen address (as `GUBER_GRPC_ADDRESS` may hold) is reached
//! over loopback.

/// `http://HOST:PORT` for `address`, or `None` when it is not `HOST:PORT` or `http://HOST:PORT`.
pub fn http_uri(address: &str) -> Option<String> {
    let trimmed = address.trim().trim_end_matches('/');
    let rest = match trimmed.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return None,
        None => trimmed,
    };
    let valid = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid || rest.contains('/') {
        return None;
    }
    let rest = if let Some(port) = rest.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = rest.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        rest.to_string()
    };
    Some(format!("http://{rest}"))
}
