//! Tests of the configuration: layers and their precedence, the environment injected as a map,
//! validation messages, secret masking.

use std::collections::HashMap;
use std::io::Write;

use clap::Parser;

use super::*;

/// An injected environment.
fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// A command line like `aether-gateway serve ...` parsed with the process environment ignored.
#[derive(Debug, Parser)]
struct TestCli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn flags(args: &[&str]) -> ServeArgs {
    let argv = std::iter::once("aether-gateway").chain(args.iter().copied());
    parse_cli::<TestCli, _, _>(argv).unwrap().serve
}

const HOME_ONLY: &[(&str, &str)] = &[("HOME", "/home/u")];

#[test]
fn defaults_are_the_documented_ones() {
    let c = load(&ServeArgs::default(), &env_of(HOME_ONLY)).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        c.data_dir,
        PathBuf::from("/home/u/.local/share/aether-gateway")
    );
    assert_eq!(c.idle_timeout, Duration::from_secs(600));
    assert_eq!(c.boot_timeout, Duration::from_secs(300));
    assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.task_poll_interval, Duration::from_secs(5));
    assert_eq!(c.threads, None, "one per CPU");
    assert_eq!(c.local.boot_delay, Duration::ZERO);
    assert_eq!(c.local.stop_grace, Duration::from_secs(10));
    assert_eq!(c.local.ready_timeout, Duration::from_secs(30));
    assert_eq!(c.local.workspace_bin, None);
    assert_eq!(c.auth.audience, "authenticated");
    assert_eq!(c.auth.leeway, Duration::from_secs(30));
    assert_eq!(c.auth.jwt_secret, None);
    assert_eq!(c.ws.ping_interval, Duration::from_secs(45));
    assert_eq!(c.ws.pong_timeout, Duration::from_secs(120));
    assert_eq!(c.ws.write_timeout, Duration::from_secs(30));
    assert_eq!(c.ws.max_message, 1 << 20);
    assert_eq!(c.ws.wake_queue_messages, 256);
    assert_eq!(c.ws.wake_queue_bytes, 1 << 20);
    assert_eq!(c.ws.client_queue, 256);
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(
        c.local_token_enabled(),
        "loopback listen enables local tokens"
    );
    assert_eq!(c.tls.paths(), None);
    c.validate().unwrap();
}

#[test]
fn data_dir_prefers_an_absolute_xdg_data_home() {
    let c = load(
        &ServeArgs::default(),
        &env_of(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "/xdg")]),
    )
    .unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/xdg/aether-gateway"));
    // A relative XDG_DATA_HOME is invalid per the spec and ignored.
    let c = load(
        &ServeArgs::default(),
        &env_of(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "rel")]),
    )
    .unwrap();
    assert_eq!(
        c.data_dir,
        PathBuf::from("/home/u/.local/share/aether-gateway")
    );
    // Without either, validation says so.
    let c = load(&ServeArgs::default(), &env_of(&[])).unwrap();
    let errors = c.validate().unwrap_err();
    assert_eq!(errors.0[0].field, "data_dir");
}

#[test]
fn precedence_is_flag_over_env_over_file_over_default() {
    let file = toml_file(
        r#"
        listen = "127.0.0.1:1111"
        idle_timeout = "1m"
        boot_timeout = "2m"
        shutdown_grace = "3s"
        [local]
        boot_delay = "4s"
        [auth]
        audience = "from-file"
        [ws]
        client_queue = 7
        "#,
    );
    let path = file.path().to_str().unwrap();
    let env = env_of(&[
        ("HOME", "/home/u"),
        ("AETHER_GATEWAY_CONFIG", path),
        ("AETHER_GATEWAY_IDLE_TIMEOUT", "2m"),
        ("AETHER_GATEWAY_BOOT_TIMEOUT", "3m"),
        ("AETHER_GATEWAY_LOCAL_BOOT_DELAY", "5s"),
        ("AETHER_GATEWAY_JWT_AUDIENCE", "from-env"),
    ]);
    let c = load(
        &flags(&["--idle-timeout", "3m", "--jwt-audience", "from-flag"]),
        &env,
    )
    .unwrap();
    assert_eq!(c.listen.port(), 1111, "file over default");
    assert_eq!(
        c.shutdown_grace,
        Duration::from_secs(3),
        "file over default"
    );
    assert_eq!(c.ws.client_queue, 7, "file over default");
    assert_eq!(c.boot_timeout, Duration::from_secs(180), "env over file");
    assert_eq!(c.local.boot_delay, Duration::from_secs(5), "env over file");
    assert_eq!(c.idle_timeout, Duration::from_secs(180), "flag over env");
    assert_eq!(c.auth.audience, "from-flag", "flag over env");
    assert_eq!(c.ws.ping_interval, Duration::from_secs(45), "default");
}

#[test]
fn the_config_flag_beats_the_config_variable() {
    let from_env = toml_file("idle_timeout = \"1m\"\n");
    let from_flag = toml_file("idle_timeout = \"2m\"\n");
    let env = env_of(&[
        ("HOME", "/h"),
        ("AETHER_GATEWAY_CONFIG", from_env.path().to_str().unwrap()),
    ]);
    let c = load(
        &flags(&["--config", from_flag.path().to_str().unwrap()]),
        &env,
    )
    .unwrap();
    assert_eq!(c.idle_timeout, Duration::from_secs(120));
}

#[test]
fn every_setting_has_a_variable() {
    let env = env_of(&[
        ("HOME", "/h"),
        ("AETHER_GATEWAY_LISTEN", "0.0.0.0:9000"),
        ("AETHER_GATEWAY_DATA_DIR", "/data"),
        ("AETHER_GATEWAY_SHUTDOWN_GRACE", "1s"),
        ("AETHER_GATEWAY_TASK_POLL_INTERVAL", "2s"),
        ("AETHER_GATEWAY_THREADS", "3"),
        (
            "AETHER_GATEWAY_ALLOWED_ORIGINS",
            "https://a.example,https://b.example",
        ),
        ("AETHER_GATEWAY_LOCAL_TOKEN", "yes"),
        ("AETHER_GATEWAY_LOG_FORMAT", "json"),
        ("AETHER_GATEWAY_WORKSPACE_BIN", "/bin/ws"),
        ("AETHER_GATEWAY_LOCAL_STOP_GRACE", "3s"),
        ("AETHER_GATEWAY_LOCAL_READY_TIMEOUT", "4s"),
        ("AETHER_GATEWAY_JWT_SECRET", "s3cr3t"),
        ("AETHER_GATEWAY_JWKS_URL", "https://keys.example/jwks.json"),
        ("AETHER_GATEWAY_JWT_ISSUER", "https://issuer.example"),
        ("AETHER_GATEWAY_JWT_LEEWAY", "5s"),
        ("AETHER_GATEWAY_JWKS_REFETCH_INTERVAL", "1m"),
        ("AETHER_GATEWAY_JWKS_CACHE_TTL", "1h"),
        ("AETHER_GATEWAY_TLS_CERT", "/c.pem"),
        ("AETHER_GATEWAY_TLS_KEY", "/k.pem"),
        ("AETHER_GATEWAY_WS_PING_INTERVAL", "6s"),
        ("AETHER_GATEWAY_WS_PONG_TIMEOUT", "7s"),
        ("AETHER_GATEWAY_WS_WRITE_TIMEOUT", "8s"),
        ("AETHER_GATEWAY_WS_MAX_MESSAGE", "65536"),
        ("AETHER_GATEWAY_WS_WAKE_QUEUE_MESSAGES", "9"),
        ("AETHER_GATEWAY_WS_WAKE_QUEUE_BYTES", "131072"),
        ("AETHER_GATEWAY_WS_CLIENT_QUEUE", "10"),
    ]);
    let c = load(&ServeArgs::default(), &env).unwrap();
    assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(c.data_dir, PathBuf::from("/data"));
    assert_eq!(c.shutdown_grace, Duration::from_secs(1));
    assert_eq!(c.task_poll_interval, Duration::from_secs(2));
    assert_eq!((c.threads, c.threads()), (Some(3), 3));
    assert_eq!(
        c.allowed_origins,
        vec!["https://a.example", "https://b.example"]
    );
    assert_eq!(c.local_token, Some(true));
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.local.workspace_bin, Some(PathBuf::from("/bin/ws")));
    assert_eq!(c.resolve_workspace_bin(), PathBuf::from("/bin/ws"));
    assert_eq!(c.local.stop_grace, Duration::from_secs(3));
    assert_eq!(c.local.ready_timeout, Duration::from_secs(4));
    assert_eq!(
        c.auth.jwt_secret.as_ref().map(Secret::expose),
        Some("s3cr3t")
    );
    assert_eq!(
        c.auth.jwks_url.as_deref(),
        Some("https://keys.example/jwks.json")
    );
    assert_eq!(c.auth.issuer.as_deref(), Some("https://issuer.example"));
    assert_eq!(c.auth.leeway, Duration::from_secs(5));
    assert_eq!(c.auth.jwks_refetch_interval, Duration::from_secs(60));
    assert_eq!(c.auth.jwks_cache_ttl, Duration::from_secs(3600));
    assert_eq!(
        c.tls.paths(),
        Some((Path::new("/c.pem"), Path::new("/k.pem")))
    );
    assert_eq!(c.ws.ping_interval, Duration::from_secs(6));
    assert_eq!(c.ws.pong_timeout, Duration::from_secs(7));
    assert_eq!(c.ws.write_timeout, Duration::from_secs(8));
    assert_eq!(c.ws.max_message, 65536);
    assert_eq!(c.ws.wake_queue_messages, 9);
    assert_eq!(c.ws.wake_queue_bytes, 131072);
    assert_eq!(c.ws.client_queue, 10);
}

#[test]
fn empty_variables_count_as_unset() {
    let env = env_of(&[
        ("HOME", "/h"),
        ("AETHER_GATEWAY_JWKS_URL", ""),
        ("AETHER_GATEWAY_IDLE_TIMEOUT", ""),
    ]);
    let c = load(&ServeArgs::default(), &env).unwrap();
    assert_eq!(c.auth.jwks_url, None);
    assert_eq!(c.idle_timeout, Duration::from_secs(600));
}

#[test]
fn a_bad_variable_is_named_in_the_error() {
    let env = env_of(&[("HOME", "/h"), ("AETHER_GATEWAY_IDLE_TIMEOUT", "soon")]);
    let err = load(&ServeArgs::default(), &env).unwrap_err();
    match &err {
        ConfigError::Env { var, message } => {
            assert_eq!(var, "AETHER_GATEWAY_IDLE_TIMEOUT");
            assert!(message.contains("soon"), "{message}");
        }
        other => panic!("expected an env error, got {other:?}"),
    }
    let env = env_of(&[("HOME", "/h"), ("AETHER_GATEWAY_LISTEN", "localhost")]);
    let err = load(&ServeArgs::default(), &env).unwrap_err();
    assert!(
        err.to_string().starts_with("AETHER_GATEWAY_LISTEN: "),
        "{err}"
    );
}

#[test]
fn unknown_keys_in_the_file_are_errors() {
    let file = toml_file("[ws]\nping_intervall = \"1s\"\n");
    let env = env_of(&[("HOME", "/h")]);
    let err = load(&flags(&["--config", file.path().to_str().unwrap()]), &env).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{text}");
    assert!(text.contains("ping_intervall"), "{text}");

    let err = load(&flags(&["--config", "/nonexistent/gw.toml"]), &env).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

#[test]
fn bad_durations_in_the_file_are_errors() {
    let file = toml_file("idle_timeout = 600\n");
    let err = load(
        &flags(&["--config", file.path().to_str().unwrap()]),
        &env_of(HOME_ONLY),
    )
    .unwrap_err();
    assert!(err.to_string().contains("idle_timeout"), "{err}");
}

#[test]
fn validate_names_every_bad_field() {
    let mut c = Config {
        data_dir: "/d".into(),
        idle_timeout: Duration::ZERO,
        threads: Some(0),
        allowed_origins: vec!["https://ok.example".into(), "ftp://x".into()],
        ..Config::default()
    };
    c.ws.ping_interval = Duration::from_secs(60);
    c.ws.pong_timeout = Duration::from_secs(30);
    c.ws.max_message = 10;
    c.ws.client_queue = 0;
    c.auth.jwt_secret = Some(Secret::new("short"));
    c.auth.jwks_url = Some("ftp://keys".into());
    c.auth.leeway = Duration::from_secs(3600);
    c.tls.cert = Some("/nonexistent/cert.pem".into());
    c.local.workspace_bin = Some("/nonexistent/aether-workspace".into());

    let errors = c.validate().unwrap_err();
    let fields: Vec<_> = errors.0.iter().map(|e| e.field).collect();
    for field in [
        "idle_timeout",
        "threads",
        "ws.pong_timeout",
        "ws.max_message",
        "ws.client_queue",
        "auth.jwt_secret",
        "auth.jwks_url",
        "auth.leeway",
        "tls.key",
        "tls.cert",
        "local.workspace_bin",
        "allowed_origins",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    let text = errors.to_string();
    assert!(text.contains("auth.jwt_secret: is 5 bytes"), "{text}");
    assert!(!text.contains("short"), "the secret leaked: {text}");
    assert!(text.contains("\"ftp://x\""), "{text}");
    assert!(
        text.lines().all(|l| l.contains(": ")),
        "one `field: message` per line: {text}"
    );
}

#[test]
fn secrets_are_masked_in_debug_and_in_the_printed_config() {
    let mut c = Config {
        data_dir: "/d".into(),
        ..Config::default()
    };
    c.auth.jwt_secret = Some(Secret::new("do-not-print-me-0123456789abcdef"));
    let debug = format!("{c:?}");
    assert!(!debug.contains("do-not-print-me"), "{debug}");
    assert!(debug.contains("MASKED"));
    let shown = c.to_toml();
    assert!(!shown.contains("do-not-print-me"), "{shown}");
    assert!(shown.contains("jwt_secret = \"MASKED\""), "{shown}");
    assert!(shown.contains("idle_timeout = \"10m\""), "{shown}");
}

#[test]
fn the_printed_config_reads_back() {
    let c = load(&flags(&["--idle-timeout", "90s"]), &env_of(HOME_ONLY)).unwrap();
    let back: Config = toml::from_str(&c.to_toml()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn local_tokens_default_to_loopback_only() {
    let mut c = Config::default();
    assert!(c.local_token_enabled());
    c.listen = "0.0.0.0:8080".parse().unwrap();
    assert!(!c.local_token_enabled());
    c.local_token = Some(true);
    assert!(c.local_token_enabled());
    c.listen = "[::1]:8080".parse().unwrap();
    c.local_token = Some(false);
    assert!(!c.local_token_enabled());
}

#[test]
fn origins_use_the_listen_port_and_the_configured_list() {
    let c = Config {
        allowed_origins: vec!["https://app.example".into()],
        ..Config::default()
    };
    assert!(c.origin_allowed("http://localhost:8080", None));
    assert!(!c.origin_allowed("http://localhost:8081", None));
    assert!(c.origin_allowed("https://app.example", None));
    assert!(c.origin_allowed("https://gw.example", Some("gw.example")));
    assert!(!c.origin_allowed("https://evil.example", Some("gw.example")));
    assert!(c.origin_allowed_on("http://127.0.0.1:43210", None, 43210));
}

#[test]
fn audience_can_be_disabled_and_issuer_required() {
    let mut auth = AuthConfig::default();
    assert_eq!(auth.settings().audience.as_deref(), Some("authenticated"));
    auth.audience = String::new();
    auth.issuer = Some("https://iss.example".into());
    let s = auth.settings();
    assert_eq!(s.audience, None);
    assert_eq!(s.issuer.as_deref(), Some("https://iss.example"));
}

#[test]
fn help_names_the_variables_but_clap_does_not_read_them() {
    let mut cmd = command_without_env(<TestCli as clap::CommandFactory>::command());
    let help = cmd.render_long_help().to_string();
    assert!(help.contains("[env: AETHER_GATEWAY_LISTEN]"), "{help}");
    assert!(
        help.contains("[env: AETHER_GATEWAY_IDLE_TIMEOUT]"),
        "{help}"
    );
    for arg in cmd.get_arguments() {
        assert!(
            arg.get_env().is_none(),
            "{:?} still reads the env",
            arg.get_id()
        );
    }
}

#[test]
fn flags_parse_with_their_value_parsers() {
    let f = flags(&[
        "--listen",
        "127.0.0.1:0",
        "--allowed-origins",
        "https://a.example,https://b.example",
        "--local-token",
        "false",
        "--log-format",
        "json",
        "--ws-max-message",
        "2048",
    ]);
    assert_eq!(f.listen, Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(f.allowed_origins.as_ref().map(Vec::len), Some(2));
    assert_eq!(f.local_token, Some(false));
    assert_eq!(f.log_format, Some(LogFormat::Json));
    assert_eq!(f.ws_max_message, Some(2048));
    let err = parse_cli::<TestCli, _, _>(["x", "--idle-timeout", "soon"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
}

#[test]
fn the_documented_example_file_parses() {
    let example = include_str!("mod.rs")
        .lines()
        .skip_while(|l| !l.starts_with("//! ```toml"))
        .skip(1)
        .take_while(|l| !l.starts_with("//! ```"))
        .map(|l| l.strip_prefix("//!").unwrap_or(l).trim_start())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(example.contains("[auth]"), "{example}");
    let c: Config = toml::from_str(&example).unwrap();
    assert_eq!(c.listen.port(), 8443);
    assert_eq!(c.idle_timeout, Duration::from_secs(900));
    assert!(c.auth.jwks_url.is_some());
    assert_eq!(c.ws.ping_interval, Duration::from_secs(30));
}
