//! The deployment files checked against the code, without Docker or Kubernetes: the Dockerfile,
//! docker-compose.yml, deploy/ (Prometheus, Kubernetes) and nginx/nginx.conf.
//!
//! Every variable a file sets is one the gateway reads, and the gateway accepts the values (they
//! go through the real command-line parser and `Config::validate`); ports, probe paths, image
//! names, service names and timeouts agree across files and with the code; every YAML file
//! parses. nginx is real: `nginx -t` on the config, then the config serving WebSockets in front
//! of three gateway nodes.
#![allow(clippy::unwrap_used)] // in helpers too, a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_yaml_ng::Value;
use switchboard_gateway::config::{Cli, Config};
use switchboard_protocol::ServerFrame;
use switchboard_testkit::{
    ConnectOptions, GatewayBuilder, Nginx, SseClient, WsClient, http_get, jwt,
};

const CONFIG_RS: &str = include_str!("../src/config.rs");
/// Where the gateway image puts the binary (Dockerfile) and what every deployment runs.
const IMAGE_BINARY: &str = "/usr/local/bin/gateway";
const SECRET: &str = "deploy-files-test-secret-0123456789abcdef";

// ---- files ---------------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every document of a YAML file (`---`-separated), merge keys (`<<: *anchor`) applied, empty
/// documents skipped.
fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            let mut value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{relative}: bad merge key: {e}"));
            value
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
        if path.is_dir() {
            if !matches!(name, "target" | ".git" | "node_modules") {
                yaml_files(&path, found);
            }
        } else if name.ends_with(".yml") || name.ends_with(".yaml") {
            found.push(path);
        }
    }
}

/// A scalar as the string a container sees (YAML may type `10000` as a number).
fn scalar(value: &Value, what: &str) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("{what} is not a scalar: {other:?}"),
    }
}

fn string_map(value: &Value, what: &str) -> BTreeMap<String, String> {
    let Some(mapping) = value.as_mapping() else {
        panic!("{what} is not a mapping: {value:?}");
    };
    mapping
        .iter()
        .map(|(k, v)| (scalar(k, what), scalar(v, &format!("{what} value"))))
        .collect()
}

fn strings(value: &Value, what: &str) -> Vec<String> {
    let Some(items) = value.as_sequence() else {
        panic!("{what} is not a list: {value:?}");
    };
    items.iter().map(|item| scalar(item, what)).collect()
}

/// `120`, `120s`, `2m`, `1m30s`, `1h` (nginx and compose durations) in seconds.
fn seconds(text: &str) -> u64 {
    if let Ok(n) = text.parse() {
        return n;
    }
    let mut total = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {text:?}"));
        total += n * match c {
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => panic!("bad duration unit in {text:?}"),
        };
        digits.clear();
    }
    assert!(digits.is_empty(), "bad duration {text:?}");
    total
}

/// `name:tag` → `name`.
fn image_repository(image: &str) -> &str {
    image.rsplit_once(':').map_or(image, |(repo, _)| repo)
}

// ---- what the gateway reads ----------------------------------------------------------------------

/// Every variable the gateway reads: the `env = "NAME"` attributes of config.rs.
fn gateway_env_names() -> BTreeSet<String> {
    let names: BTreeSet<String> = CONFIG_RS
        .split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    assert!(names.len() > 20, "found only {names:?} in config.rs");
    names
}

fn assert_known_names<'a>(origin: &str, names: impl IntoIterator<Item = &'a String>) {
    let known = gateway_env_names();
    for name in names {
        assert!(
            known.contains(name),
            "{origin} sets {name}, which the gateway does not read (config.rs)"
        );
    }
}

/// The configuration a gateway started with exactly these variables would run with: they go
/// through the real parser (with `env` as the whole environment, so this process's plays no part)
/// and `Config::validate`.
fn gateway_config(origin: &str, env: &BTreeMap<String, String>) -> Config {
    assert_known_names(origin, env.keys());
    let config = Cli::try_parse_with(["gateway"], env)
        .unwrap_or_else(|e| panic!("{origin}: the gateway refuses {env:?}:\n{e}"))
        .config;
    config
        .validate()
        .unwrap_or_else(|e| panic!("{origin}: the gateway refuses its settings: {e}"));
    config
}

fn admin_port(origin: &str, config: &Config) -> u16 {
    config
        .admin_listen
        .unwrap_or_else(|| {
            panic!("{origin}: no SWITCHBOARD_ADMIN_LISTEN; /metrics would be public")
        })
        .port()
}

fn drain_secs(config: &Config) -> u64 {
    config.drain_timeout_ms.div_ceil(1_000)
}

// ---- Dockerfile ----------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Dockerfile {
    /// Each `FROM` line's image.
    from: Vec<String>,
    /// Every `RUN` command, continuation lines joined.
    run: Vec<String>,
    env: BTreeMap<String, String>,
    expose: Vec<u16>,
    user: String,
    entrypoint: String,
}

fn dockerfile() -> Dockerfile {
    let text = read("Dockerfile");
    let mut file = Dockerfile::default();
    let mut instruction = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && instruction.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(continued) => {
                instruction.push_str(continued);
                instruction.push(' ');
                continue;
            }
            None => instruction.push_str(line),
        }
        let (keyword, rest) = instruction.split_once(' ').unwrap_or((&instruction, ""));
        let rest = rest.trim().to_owned();
        match keyword {
            "FROM" => file
                .from
                .push(rest.split_whitespace().next().unwrap().to_owned()),
            "RUN" => file.run.push(rest),
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV in KEY=VALUE form");
                    file.env.insert(k.to_owned(), v.to_owned());
                }
            }
            "EXPOSE" => file
                .expose
                .extend(rest.split_whitespace().map(|p| p.parse::<u16>().unwrap())),
            "USER" => file.user = rest,
            "ENTRYPOINT" => {
                let argv: Vec<String> = serde_json::from_str(&rest).expect("exec-form ENTRYPOINT");
                file.entrypoint = argv.join(" ");
            }
            _ => {}
        }
        instruction.clear();
    }
    file
}

/// The uid the image runs as, checked to be numeric and not root.
fn image_uid(file: &Dockerfile) -> u64 {
    let uid = file.user.split(':').next().unwrap_or_default();
    let uid: u64 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER {:?} must be numeric (runAsNonRoot)", file.user));
    assert_ne!(uid, 0, "the image must not run as root");
    uid
}

#[test]
fn the_image_builds_the_gateway_and_runs_it_unprivileged() {
    let file = dockerfile();
    let config = gateway_config("Dockerfile ENV", &file.env);
    let mut ports = vec![config.listen.port(), admin_port("Dockerfile", &config)];
    let mut exposed = file.expose.clone();
    ports.sort_unstable();
    exposed.sort_unstable();
    assert_eq!(exposed, ports, "EXPOSE must be the main and admin ports");

    let build = file
        .run
        .iter()
        .find(|run| run.contains("cargo build"))
        .expect("a RUN with cargo build");
    let package = concat!("-p ", env!("CARGO_PKG_NAME"));
    for part in ["--release", "--locked", package] {
        assert!(build.contains(part), "the build lacks {part}: {build}");
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_gateway"))
        .file_name()
        .unwrap();
    let bin = bin.to_str().unwrap();
    assert!(
        build.contains(&format!("target/release/{bin} ")),
        "the build does not copy out the {bin} binary: {build}"
    );
    assert!(
        build.contains("strip --strip-debug /out/"),
        "the image ships the debug sections (~50 MB): {build}"
    );
    assert_eq!(file.entrypoint, IMAGE_BINARY);
    assert!(IMAGE_BINARY.ends_with(&format!("/{bin}")));
    image_uid(&file);

    // The runtime must be the builder's Debian release: the binary links against its glibc.
    let [builder, runtime] = &file.from[..] else {
        panic!("expected a builder and a runtime stage: {:?}", file.from);
    };
    let release = |image: &str| {
        let tag = image
            .split_once(':')
            .map(|(_, tag)| tag)
            .unwrap_or_default();
        let release = tag
            .split('-')
            .find(|p| ["bullseye", "bookworm", "trixie"].contains(p));
        release
            .unwrap_or_else(|| panic!("{image} names no Debian release"))
            .to_owned()
    };
    assert!(builder.starts_with("rust:"), "{builder}");
    assert_eq!(release(builder), release(runtime), "{builder} vs {runtime}");

    let ignore = read(".dockerignore");
    for entry in ["target/", ".git/", "node_modules/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore lacks {entry}"
        );
    }
}

// ---- YAML ----------------------------------------------------------------------------------------

#[test]
fn every_yaml_file_parses() {
    let mut files = Vec::new();
    yaml_files(&repo_root(), &mut files);
    let root = repo_root();
    let relative: BTreeSet<String> = files
        .iter()
        .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    for expected in [
        "docker-compose.yml",
        "deploy/prometheus.yml",
        "deploy/k8s/configmap.yaml",
        "deploy/k8s/secret.yaml",
        "deploy/k8s/deployment.yaml",
        "deploy/k8s/service.yaml",
        "deploy/k8s/ingress.yaml",
        "deploy/k8s/pdb.yaml",
        "deploy/k8s/hpa.yaml",
    ] {
        assert!(
            relative.contains(expected),
            "{expected} is missing: {relative:?}"
        );
    }
    for file in &relative {
        assert!(!yaml_documents(file).is_empty(), "{file} is empty");
    }
}

// ---- docker-compose ------------------------------------------------------------------------------

/// docker-compose.yml's services, and the names of those built from this repository: the gateways.
fn compose() -> (Value, Vec<String>) {
    let mut documents = yaml_documents("docker-compose.yml");
    assert_eq!(documents.len(), 1);
    let compose = documents.remove(0);
    let gateways: Vec<String> = compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .filter(|(_, service)| !service["build"].is_null())
        .map(|(name, _)| scalar(name, "service name"))
        .collect();
    assert!(
        gateways.len() >= 2,
        "a cluster needs gateway nodes: {gateways:?}"
    );
    (compose, gateways)
}

/// Compose interpolation as `docker compose` would resolve it with nothing exported: every
/// `${NAME:-default}` becomes its default. Other forms would make the file depend on the shell.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .unwrap_or_else(|| panic!("unclosed ${{ in {text}"));
        let inner = &rest[start + 2..start + end];
        let (_, default) = inner
            .split_once(":-")
            .unwrap_or_else(|| panic!("${{{inner}}} needs a default (${{NAME:-default}})"));
        out.push_str(default);
        rest = &rest[start + end + 1..];
    }
    assert!(!rest.contains('$'), "bare $ in {text:?}");
    out.push_str(rest);
    out
}

/// The host of `scheme://user:pass@host:port/path`.
fn url_host(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    host_port.split(':').next().unwrap_or_default()
}

/// The configuration each compose gateway runs with: the image's variables, then its own.
fn compose_gateway_config(compose: &Value, name: &str) -> Config {
    let origin = format!("docker-compose.yml {name}");
    let mut env = dockerfile().env;
    for (k, v) in string_map(&compose["services"][name]["environment"], &origin) {
        env.insert(k, interpolate(&v));
    }
    gateway_config(&origin, &env)
}

#[test]
fn compose_runs_gateway_nodes_with_their_backends_behind_nginx() {
    let (compose, gateways) = compose();
    let services = &compose["services"];
    for backend in ["postgres", "redis"] {
        assert!(
            !services[backend]["healthcheck"]["test"].is_null(),
            "{backend} needs a healthcheck for depends_on: service_healthy"
        );
    }
    let mut node_ids = BTreeSet::new();
    let mut main_ports = BTreeSet::new();
    let mut admin_ports = BTreeSet::new();
    for name in &gateways {
        let origin = format!("docker-compose.yml {name}");
        let service = &services[name.as_str()];
        let config = compose_gateway_config(&compose, name);
        let admin = admin_port(&origin, &config);
        let exposed = strings(&service["expose"], &origin);
        for port in [config.listen.port(), admin] {
            assert!(
                exposed.contains(&port.to_string()),
                "{origin} does not expose {port}"
            );
        }
        assert!(
            service["ports"].is_null(),
            "{origin} must not publish ports; nginx is the entry"
        );
        main_ports.insert(config.listen.port());
        admin_ports.insert(admin);
        assert!(
            node_ids.insert(config.node_id.clone().expect("SWITCHBOARD_NODE_ID")),
            "{origin}: node ids must differ"
        );
        let image_name = scalar(&service["image"], &origin);
        assert_eq!(
            image_repository(&image_name),
            image_repository(&k8s_gateway_image())
        );
        assert_eq!(scalar(&service["build"], &origin), ".");
        for (url, backend) in [
            (&config.database_url, "postgres"),
            (&config.redis_url, "redis"),
        ] {
            let url = url
                .as_deref()
                .unwrap_or_else(|| panic!("{origin}: no {backend} URL"));
            assert_eq!(url_host(url), backend, "{origin}: {url}");
            assert_eq!(
                scalar(&service["depends_on"][backend]["condition"], &origin),
                "service_healthy"
            );
        }
        let grace = seconds(&scalar(&service["stop_grace_period"], &origin));
        assert!(
            grace > drain_secs(&config),
            "{origin}: stop_grace_period {grace}s must exceed the drain timeout"
        );
    }
    let [main_port] = main_ports.into_iter().collect::<Vec<_>>()[..] else {
        panic!("gateways listen on different ports");
    };
    let [admin_port] = admin_ports.into_iter().collect::<Vec<_>>()[..] else {
        panic!("gateways' admin listeners differ");
    };

    // nginx and Prometheus reach every gateway, on the right port, through the mounted files.
    let mounts = |service: &str| strings(&services[service]["volumes"], service);
    assert!(
        mounts("nginx")
            .iter()
            .any(|m| m.starts_with("./nginx/nginx.conf:/etc/nginx/nginx.conf"))
    );
    assert!(
        mounts("prometheus")
            .iter()
            .any(|m| m.starts_with("./deploy/prometheus.yml:"))
    );
    let expected: BTreeSet<String> = gateways
        .iter()
        .flat_map(|g| [format!("{g}:{main_port}"), format!("{g}:{admin_port}")])
        .collect();
    assert_eq!(
        nginx_upstream_servers(),
        expected,
        "nginx.conf upstreams vs compose"
    );
    let prometheus = yaml_documents("deploy/prometheus.yml").remove(0);
    let targets: BTreeSet<String> = prometheus["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"].as_sequence().unwrap().iter())
        .flat_map(|config| strings(&config["targets"], "prometheus targets"))
        .collect();
    let expected: BTreeSet<String> = gateways
        .iter()
        .map(|g| format!("{g}:{admin_port}"))
        .collect();
    assert_eq!(
        targets, expected,
        "Prometheus must scrape every gateway's admin port"
    );
}

// ---- Kubernetes ----------------------------------------------------------------------------------

/// Every object in deploy/k8s, by `Kind/name`.
fn k8s_objects() -> BTreeMap<String, Value> {
    let mut objects = BTreeMap::new();
    let dir = repo_root().join("deploy/k8s");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        for object in yaml_documents(&format!("deploy/k8s/{name}")) {
            let kind = scalar(&object["kind"], &name);
            let id = format!("{kind}/{}", scalar(&object["metadata"]["name"], &name));
            assert!(
                object["metadata"]["namespace"].is_null(),
                "{id}: the manifests are namespace-free (kubectl -n picks one)"
            );
            assert!(objects.insert(id.clone(), object).is_none(), "{id} twice");
        }
    }
    objects
}

fn k8s_gateway_image() -> String {
    let objects = k8s_objects();
    let deployment = &objects["Deployment/switchboard"];
    scalar(
        &deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "image",
    )
}

/// Whether every `key: value` of `selector` is among `labels`.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let selector = string_map(selector, "selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The configuration the gateway pods run with: the image's variables, then the ConfigMap and
/// Secret (envFrom), then the container's own.
fn k8s_gateway_config(objects: &BTreeMap<String, Value>) -> Config {
    let deployment = &objects["Deployment/switchboard"];
    let name = scalar(&deployment["metadata"]["name"], "deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut env = dockerfile().env;
    for source in container["envFrom"].as_sequence().unwrap() {
        let (id, field) = match (&source["configMapRef"], &source["secretRef"]) {
            (Value::Null, secret) => (
                format!("Secret/{}", scalar(&secret["name"], "ref")),
                "stringData",
            ),
            (config, _) => (
                format!("ConfigMap/{}", scalar(&config["name"], "ref")),
                "data",
            ),
        };
        let object = objects
            .get(&id)
            .unwrap_or_else(|| panic!("{id} is referenced but missing"));
        env.extend(string_map(&object[field], &id));
    }
    for var in container["env"].as_sequence().unwrap() {
        let key = scalar(&var["name"], "env name");
        let value = match scalar(&var["valueFrom"]["fieldRef"]["fieldPath"], &key).as_str() {
            // The longest pod name the Deployment can produce: <name>-<10-char hash>-<5 chars>.
            "metadata.name" => format!("{name}-{}-{}", "b".repeat(10), "c".repeat(5)),
            other => panic!("{key}: unexpected fieldRef {other}"),
        };
        env.insert(key, value);
    }
    gateway_config("deploy/k8s", &env)
}

#[test]
fn kubernetes_runs_valid_gateways_with_probes_and_a_drain_that_fit_the_code() {
    let objects = k8s_objects();
    let deployment = &objects["Deployment/switchboard"];
    let pod = &deployment["spec"]["template"];
    let labels = string_map(&pod["metadata"]["labels"], "pod labels");
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        &labels
    ));
    let [container] = &pod["spec"]["containers"].as_sequence().unwrap()[..] else {
        panic!("one container per pod");
    };
    let config = k8s_gateway_config(&objects);
    let admin = admin_port("deploy/k8s", &config);

    let ports: BTreeMap<String, u16> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                scalar(&p["name"], "port"),
                scalar(&p["containerPort"], "port").parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports.get("http"), Some(&config.listen.port()));
    assert_eq!(ports.get("admin"), Some(&admin));
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(scalar(&get["path"], probe), path, "{probe}");
        assert_eq!(
            scalar(&get["port"], probe),
            "admin",
            "{probe} must probe the admin port"
        );
    }
    let annotations = string_map(&pod["metadata"]["annotations"], "pod annotations");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], admin.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // preStop lets endpoints drop the pod, then SIGTERM drains; both fit before SIGKILL.
    let pre_stop = strings(
        &container["lifecycle"]["preStop"]["exec"]["command"],
        "preStop",
    );
    let [sleep, secs] = &pre_stop[..] else {
        panic!("preStop: {pre_stop:?}")
    };
    assert_eq!(sleep, "sleep");
    let pre_stop: u64 = secs.parse().unwrap();
    assert!((3..=15).contains(&pre_stop), "preStop sleep {pre_stop}s");
    let grace: u64 = scalar(&pod["spec"]["terminationGracePeriodSeconds"], "grace")
        .parse()
        .unwrap();
    assert!(
        grace > pre_stop + drain_secs(&config),
        "terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} + drain"
    );

    let uid = image_uid(&dockerfile()).to_string();
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"],
        Value::Bool(true)
    );
    assert_eq!(
        scalar(&pod["spec"]["securityContext"]["runAsUser"], "runAsUser"),
        uid
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        Value::Bool(true)
    );
    assert!(
        !container["resources"]["requests"]["cpu"].is_null(),
        "the HPA needs CPU requests"
    );
    let image = scalar(&container["image"], "image");
    assert!(
        !image.ends_with(":latest") && image.contains(':'),
        "pin the image tag: {image}"
    );
}

#[test]
fn kubernetes_objects_select_the_gateway_pods_and_route_websockets_sticky() {
    let objects = k8s_objects();
    let deployment = &objects["Deployment/switchboard"];
    let pod = &deployment["spec"]["template"];
    let labels = string_map(&pod["metadata"]["labels"], "pod labels");
    let container_ports: BTreeSet<String> = pod["spec"]["containers"][0]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| scalar(&p["name"], "port"))
        .collect();

    for (id, object) in objects.iter().filter(|(id, _)| id.starts_with("Service/")) {
        assert!(
            selects(&object["spec"]["selector"], &labels),
            "{id} selects no gateway pod"
        );
        for port in object["spec"]["ports"].as_sequence().unwrap() {
            let target = scalar(&port["targetPort"], id);
            assert!(
                container_ports.contains(&target),
                "{id}: no container port {target}"
            );
        }
    }
    let ingress = &objects["Ingress/switchboard"];
    let annotation = |key: &str| scalar(&ingress["metadata"]["annotations"][key], key);
    let heartbeat_timeout = k8s_gateway_config(&objects).heartbeat_timeout().as_secs();
    for key in ["proxy-read-timeout", "proxy-send-timeout"] {
        let secs: u64 = annotation(&format!("nginx.ingress.kubernetes.io/{key}"))
            .parse()
            .unwrap();
        assert!(
            secs > heartbeat_timeout,
            "{key} {secs}s must exceed the heartbeat timeout"
        );
    }
    assert_eq!(
        annotation("nginx.ingress.kubernetes.io/upstream-hash-by"),
        "$remote_addr"
    );
    let paths = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_sequence()
        .unwrap();
    let routed: Vec<String> = paths.iter().map(|p| scalar(&p["path"], "path")).collect();
    let socketio_path = k8s_gateway_config(&objects).socketio_path;
    assert_eq!(
        routed,
        ["/ws".to_owned(), socketio_path],
        "only /ws and the Socket.IO path are public"
    );
    for path in paths {
        let backend = &path["backend"]["service"];
        let service = &objects[&format!("Service/{}", scalar(&backend["name"], "backend"))];
        let port = scalar(&backend["port"]["name"], "backend port");
        assert!(
            service["spec"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|p| scalar(&p["name"], "port") == port),
            "the ingress routes to a port its Service lacks"
        );
        assert_eq!(
            scalar(&service["spec"]["ports"][0]["targetPort"], "targetPort"),
            "http"
        );
    }

    let pdb = &objects["PodDisruptionBudget/switchboard"];
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], &labels));
    let hpa = &objects["HorizontalPodAutoscaler/switchboard"];
    assert_eq!(scalar(&hpa["apiVersion"], "hpa"), "autoscaling/v2");
    assert_eq!(
        scalar(&hpa["spec"]["scaleTargetRef"]["kind"], "hpa"),
        "Deployment"
    );
    assert_eq!(
        scalar(&hpa["spec"]["scaleTargetRef"]["name"], "hpa"),
        scalar(&deployment["metadata"]["name"], "deployment")
    );
    let min: u64 = scalar(&hpa["spec"]["minReplicas"], "min").parse().unwrap();
    let max: u64 = scalar(&hpa["spec"]["maxReplicas"], "max").parse().unwrap();
    let replicas: u64 = scalar(&deployment["spec"]["replicas"], "replicas")
        .parse()
        .unwrap();
    assert!(
        min >= 2 && min <= replicas && replicas <= max,
        "replicas {replicas}, HPA {min}-{max}"
    );
    let scale_down: u64 = scalar(
        &hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        "scaleDown",
    )
    .parse()
    .unwrap();
    assert!(
        scale_down >= 300,
        "scaling down moves connections: stabilize for minutes"
    );
}

// ---- nginx ---------------------------------------------------------------------------------------

/// nginx.conf's directives (comments dropped), one per `;`-terminated line, as (name, arguments).
fn nginx_directives(conf: &str) -> Vec<(String, String)> {
    conf.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter_map(|line| line.strip_suffix(';'))
        .map(|line| {
            let (name, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            (name.to_owned(), args.trim().to_owned())
        })
        .collect()
}

/// The `host:port` of every upstream `server` in nginx/nginx.conf.
fn nginx_upstream_servers() -> BTreeSet<String> {
    nginx_directives(&read("nginx/nginx.conf"))
        .into_iter()
        .filter(|(name, _)| name == "server")
        .map(|(_, args)| args.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// The text of the block that opens with `header` (e.g. `location = /ws {`), up to its `}`.
fn nginx_block<'a>(conf: &'a str, header: &str) -> &'a str {
    let start = conf
        .find(header)
        .unwrap_or_else(|| panic!("nginx.conf has no `{header}`"));
    let body = &conf[start + header.len()..];
    &body[..body.find('}').unwrap()]
}

#[test]
fn nginx_config_outlasts_the_heartbeat_and_sizes_for_many_websockets() {
    let conf = read("nginx/nginx.conf");
    let directives = nginx_directives(&conf);
    let value = |name: &str| -> &str {
        let mut found = directives.iter().filter(|(n, _)| n == name);
        let (_, args) = found.next().unwrap_or_else(|| panic!("{name} is not set"));
        assert!(found.next().is_none(), "{name} is set twice");
        args
    };
    assert_eq!(value("hash"), "$remote_addr consistent");
    let connections: u64 = value("worker_connections").parse().unwrap();
    let nofile: u64 = value("worker_rlimit_nofile").parse().unwrap();
    assert!(connections >= 10_000, "worker_connections {connections}");
    assert!(
        nofile >= 2 * connections,
        "worker_rlimit_nofile {nofile} < 2 x worker_connections"
    );
    for (name, args) in &directives {
        if name == "server" {
            assert!(args.contains("max_fails="), "no passive health for {args}");
        }
    }

    let (compose, gateways) = compose();
    let heartbeat_timeout = compose_gateway_config(&compose, &gateways[0]).heartbeat_timeout();
    let socketio = compose_gateway_config(&compose, &gateways[0]).socketio_path;
    for path in ["/ws".to_owned(), socketio] {
        let websockets = nginx_directives(nginx_block(&conf, &format!("location = {path} {{")));
        let ws = |name: &str| -> String {
            let found = websockets.iter().find(|(n, _)| n == name);
            found
                .unwrap_or_else(|| panic!("{path}: {name} is not set"))
                .1
                .clone()
        };
        for name in ["proxy_read_timeout", "proxy_send_timeout"] {
            let secs = seconds(&ws(name));
            assert!(
                secs > heartbeat_timeout.as_secs(),
                "{path}: {name} {secs}s must outlast the heartbeat timeout {heartbeat_timeout:?}"
            );
        }
        assert_eq!(ws("proxy_http_version"), "1.1");
        assert_eq!(ws("proxy_buffering"), "off");
        assert!(
            websockets
                .iter()
                .any(|(n, a)| n == "proxy_set_header" && a == "Upgrade $http_upgrade"),
            "{path} passes the upgrade on"
        );
    }
    let metrics = nginx_directives(nginx_block(&conf, "location /metrics {"));
    assert!(
        metrics
            .iter()
            .any(|(n, a)| (n == "return" && a.starts_with("40")) || (n == "deny" && a == "all")),
        "/metrics must be refused: {metrics:?}"
    );
}

/// nginx/nginx.conf made to run here, as a template for `testkit::Nginx` (`{{listen}}`,
/// `{{dir}}`, `{{temp_paths}}`): each gateway's host swapped for a local address, the main-context
/// `error_log` (the fixture sets its own) dropped, logs and temp files moved into the fixture's dir,
/// one worker. Everything else is the production file.
fn local_nginx_template(gateways: &[(String, SocketAddr, SocketAddr)]) -> String {
    let mut conf = read("nginx/nginx.conf");
    let replace = |conf: &mut String, from: &str, to: &str| {
        assert!(conf.contains(from), "nginx.conf has no `{from}`");
        *conf = conf.replace(from, to);
    };
    let (_, compose_gateways) = compose();
    assert_eq!(compose_gateways.len(), gateways.len());
    for (name, main, admin) in gateways {
        // The ports are the compose ones, which the compose test ties to the gateway's settings.
        replace(
            &mut conf,
            &format!("server {name}:8080 "),
            &format!("server {main} "),
        );
        replace(
            &mut conf,
            &format!("server {name}:9090 "),
            &format!("server {admin} "),
        );
    }
    replace(&mut conf, "listen 80;", "listen {{listen}};");
    replace(&mut conf, "worker_processes auto;", "worker_processes 1;");
    replace(&mut conf, "/var/log/nginx/", "{{dir}}/logs/");
    replace(&mut conf, "\nhttp {\n", "\nhttp {\n    {{temp_paths}}\n");
    let conf: String = conf
        .lines()
        .filter(|line| {
            !["error_log ", "pid ", "user ", "daemon "]
                .iter()
                .any(|d| line.starts_with(d))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    for (name, args) in nginx_directives(&conf) {
        assert!(
            !args.contains(" /") && !args.starts_with('/'),
            "`{name} {args}` would touch the machine's files; adjust local_nginx_template"
        );
    }
    conf
}

/// Renders the template the way `testkit::Nginx` does, for `nginx -t`.
fn render_nginx(template: &str, listen: SocketAddr, dir: &Path) -> String {
    let dir = dir.display().to_string();
    let temp_paths: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|kind| format!("{kind}_temp_path {dir}/tmp_{kind};\n    "))
        .collect();
    template
        .replace("{{listen}}", &listen.to_string())
        .replace("{{dir}}", &dir)
        .replace("{{temp_paths}}", temp_paths.trim_end())
}

#[test]
fn nginx_accepts_the_config() {
    let nginx =
        switchboard_testkit::process::find_binary("nginx", &["/usr/sbin", "/usr/local/sbin"])
            .unwrap();
    // `nginx -t` resolves upstream hosts, so they must be addresses; nothing connects to them.
    let (_, names) = compose();
    let gateways: Vec<_> = (1..)
        .zip(names)
        .map(|(n, name)| {
            let main = SocketAddr::from(([127, 0, 0, 1], 18_080 + n));
            let admin = SocketAddr::from(([127, 0, 0, 1], 19_090 + n));
            (name, main, admin)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], switchboard_testkit::free_port().unwrap()));
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(
        &conf_path,
        render_nginx(&local_nginx_template(&gateways), listen, dir.path()),
    )
    .unwrap();
    let output = std::process::Command::new(&nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .args(["-e", "stderr", "-g"])
        .arg(format!(
            "pid {}/nginx.pid; error_log stderr notice;",
            dir.path().display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.contains("test is successful"),
        "nginx -t failed:\n{stderr}"
    );
}

/// The node a `session:ready` came from: connection ids are `<node id>-<n>`.
fn node_of(ready: &ServerFrame) -> String {
    let ServerFrame::SessionReady { conn_id, .. } = ready else {
        panic!("expected session:ready, got {ready:?}");
    };
    conn_id.rsplit_once('-').unwrap().0.to_owned()
}

async fn connect_through(nginx: &Nginx, user: &str) -> (WsClient, String) {
    let token = jwt::mint_hs256(SECRET, user, user, 3_600);
    let (client, ready) = WsClient::connect_session(&nginx.ws_url(), ConnectOptions::bearer(token))
        .await
        .unwrap_or_else(|e| panic!("{user} connects through nginx: {e:#}"));
    (client, node_of(&ready))
}

#[tokio::test]
async fn nginx_serves_websockets_sticky_by_client_address_fails_over_and_hides_metrics() {
    // Three nodes named as in docker-compose.yml. Unlike there, each serves its admin endpoints
    // on its main listener, which therefore *would* answer /metrics to anything nginx forwarded:
    // the 404s below are nginx refusing, not a gateway lacking the route.
    let (_, names) = compose();
    let mut gateways = Vec::new();
    for name in &names {
        let gateway = GatewayBuilder::new(env!("CARGO_BIN_EXE_gateway"))
            .env("SWITCHBOARD_JWT_SECRET", SECRET)
            .env("SWITCHBOARD_NODE_ID", name)
            .name(name)
            .start()
            .await
            .unwrap();
        gateways.push(gateway);
    }
    let layout: Vec<_> = names
        .iter()
        .zip(&gateways)
        .map(|(name, gw)| (name.clone(), gw.addr(), gw.addr()))
        .collect();
    let nginx = Nginx::start(&local_nginx_template(&layout)).await.unwrap();

    let health = http_get(nginx.addr(), "/healthz", &[]).await.unwrap();
    assert_eq!(health.status, 200, "/healthz is proxied: {}", health.text());
    assert_eq!(health.text(), "ok\n");
    for path in [
        "/metrics",
        "/metrics/",
        "//metrics",
        "/%6Detrics",
        "/healthz/../metrics",
        "/readyz",
        "/api/v1/openapi.json",
        "/",
    ] {
        let response = http_get(nginx.addr(), path, &[]).await.unwrap();
        assert_eq!(
            response.status,
            404,
            "GET {path} through nginx: {}",
            response.text()
        );
    }
    for gateway in &gateways {
        let direct = gateway.http_get("/metrics").await.unwrap();
        assert_eq!(direct.status, 200, "the upstream itself serves /metrics");
    }

    // Server-Sent Events pass through as they come (nginx buffers nothing on /sse).
    let (mut writer, _) = connect_through(&nginx, "zed").await;
    writer.create_room("board").await.unwrap();
    let auth = format!("Bearer {}", jwt::mint_hs256(SECRET, "yan", "Yan", 600));
    let (mut stream, response) = SseClient::connect(
        nginx.addr(),
        "/sse?rooms=board",
        &[("Authorization", auth.as_str())],
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    stream.next_named("session:ready").await.unwrap();
    writer.send_text("board", "live", "sse-1").await.unwrap();
    let event = stream.next_named("message:new").await.unwrap();
    assert_eq!(event.json().unwrap()["message"]["content"], "live");

    // socket.io-client's WebSocket transport passes through too: the Engine.IO open packet, then
    // the Socket.IO connect with the token, answered with the socket's id and session:ready.
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", nginx.addr());
    let mut socketio = WsClient::connect(&url, ConnectOptions::default())
        .await
        .unwrap();
    let open = socketio.recv_message().await.unwrap();
    assert!(open.to_text().unwrap().starts_with(r#"0{"#), "{open:?}");
    let token = jwt::mint_hs256(SECRET, "io", "Io", 600);
    socketio
        .send_raw_text(&format!(r#"40{{"token":"{token}"}}"#))
        .await
        .unwrap();
    let connected = socketio.recv_message().await.unwrap();
    assert!(
        connected.to_text().unwrap().starts_with(r#"40{"#),
        "{connected:?}"
    );
    let ready = socketio.recv_message().await.unwrap();
    assert!(
        ready
            .to_text()
            .unwrap()
            .starts_with(r#"42["session:ready","#),
        "{ready:?}"
    );

    // Every connection from this address lands on the same node.
    let (mut first, home) = connect_through(&nginx, "ada").await;
    for user in ["bob", "cy"] {
        assert_eq!(
            connect_through(&nginx, user).await.1,
            home,
            "{user} is sticky"
        );
    }
    // That node dies: new connections fail over to another node, and stick to it.
    let dead = names.iter().position(|n| *n == home).unwrap();
    gateways[dead].kill_hard().await.unwrap();
    while first.recv().await.is_ok() {}
    assert!(
        first.closed().is_some(),
        "nginx passes the node's death on to its clients"
    );
    let (_second, new_home) = connect_through(&nginx, "dee").await;
    assert_ne!(new_home, home, "nginx skips the dead node");
    for user in ["eve", "fay"] {
        assert_eq!(
            connect_through(&nginx, user).await.1,
            new_home,
            "{user} is sticky"
        );
    }
}

#[test]
fn the_helpers_read_durations_interpolations_and_hosts() {
    assert_eq!(seconds("120s"), 120);
    assert_eq!(seconds("1m30s"), 90);
    assert_eq!(seconds("75"), 75);
    assert_eq!(interpolate("a${X:-b}c"), "abc");
    assert_eq!(url_host("postgres://u:p@db:5432/x"), "db");
    assert_eq!(url_host("redis://redis:6379"), "redis");
}
