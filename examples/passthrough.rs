//! careguard's proxy with the pass-through guard (no engine, no policy): what the proxy path
//! itself costs. Used by `scripts/bench.sh` with `CAREGUARD_GUARD=none`.
//!
//! ```sh
//! cargo run --release --example passthrough -- 127.0.0.1:8080 127.0.0.1:9090 http://127.0.0.1:18000/v1
//! ```

use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut config = careguard::config::Config::default();
    config.server.listen = args.next().ok_or("listen address")?.parse()?;
    config.server.admin_listen = args.next().ok_or("admin address")?.parse()?;
    config.upstream.base_url = Some(args.next().ok_or("upstream URL")?);
    let runtime = careguard::server::runtime()?;
    runtime.block_on(async move {
        let server =
            careguard::server::Server::start(config, Arc::new(careguard::hooks::PassThrough))
                .await?;
        eprintln!("pass-through proxy on {}", server.addr);
        tokio::signal::ctrl_c().await?;
        server.shutdown().await;
        Ok(())
    })
}
