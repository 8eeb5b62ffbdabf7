// Checks of the deployment files (driven by deploy_manifests_test.sh):
//  - Kubernetes: every Deployment and Service against the Kubernetes API schema (kubernetes-models:
//    types, required fields, formats; unknown fields are not caught by it), the LeaderWorkerSet's
//    fields (its CRD is not in kubernetes-models) with its leader/worker templates as core/v1
//    PodTemplateSpecs, and how deltaserve is wired in: probes on /health at --port, --host 0.0.0.0,
//    Services selecting real pods and ports, the grace period covering --shutdown-timeout, the LWS
//    leader and workers agreeing on --tp/--nnodes/--node-rank/--dist-init-addr/--dedicated-frontend/
//    --shutdown-timeout and GPUs per pod, and worker pods' grace period at least the leader's.
//  - Every `deltaserve serve` flag in the manifests, the Slurm script, the systemd unit, the
//    Dockerfile and docs/deploy.md is one that `deltaserve serve --help` lists.
// Usage: node deploy_manifests.mjs DELTASERVE_BIN SOURCE_DIR
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { Service } from "kubernetes-models/v1/Service";
import { PodTemplateSpec } from "kubernetes-models/v1/PodTemplateSpec";

const [binary, sourceDir] = process.argv.slice(2);
const deployDir = path.join(sourceDir, "deploy");
const problems = [];
const problem = (where, message) => problems.push(`${where}: ${message}`);

const DEFAULT_HTTP_PORT = 8000;         // ServeOptions::port
const DEFAULT_SHUTDOWN_TIMEOUT_S = 30;  // ServeOptions::shutdown_timeout_s
const DEFAULT_GRACE_PERIOD_S = 30;      // Kubernetes' terminationGracePeriodSeconds
const LWS_API = "leaderworkerset.x-k8s.io/v1";
const LWS_RESTART_POLICIES = ["RecreateGroupOnPodRestart", "None"];
const LWS_TEMPLATE_FIELDS = ["size", "restartPolicy", "leaderTemplate", "workerTemplate", "subGroupPolicy"];
const LWS_SPEC_FIELDS = ["replicas", "leaderWorkerTemplate", "rolloutStrategy", "startupPolicy", "networkConfig"];

function schemaCheck(where, Model, object) {
  try {
    new Model(object).validate();
  } catch (e) {
    problem(where, `schema: ${e.message}`);
  }
}

// `serve` flags of an argv (`--flag=value` or `--flag value`): Map flag -> value (or true).
function serveFlags(argv) {
  const flags = new Map();
  const start = argv.indexOf("serve");
  if (start < 0) return flags;
  for (let i = start + 1; i < argv.length; ++i) {
    const match = /^(--[a-z][a-z0-9-]*)(?:=(.*))?$/.exec(argv[i]);
    if (!match) continue;
    const hasSeparateValue = match[2] === undefined && i + 1 < argv.length && !argv[i + 1].startsWith("--");
    flags.set(match[1], match[2] ?? (hasSeparateValue ? argv[++i] : true));
  }
  return flags;
}

function containerArgv(container) {
  return [...(container.command ?? []), ...(container.args ?? [])];
}

// The deltaserve container of a pod template (the one whose argv runs `serve`).
function serveContainer(where, template) {
  const found = (template?.spec?.containers ?? []).filter((c) => containerArgv(c).includes("serve"));
  if (found.length !== 1) problem(where, `expected one container running \`deltaserve serve\`, found ${found.length}`);
  return found[0];
}

function containerPorts(template) {
  return (template?.spec?.containers ?? []).flatMap((c) => c.ports ?? []);
}

// A pod that runs the front end: probes on /health at --port, listening beyond loopback, and a
// grace period longer than --shutdown-timeout (or Kubernetes kills it mid-drain).
function checkFrontEndPod(where, template) {
  const container = serveContainer(where, template);
  if (!container) return;
  const flags = serveFlags(containerArgv(container));
  const port = Number(flags.get("--port") ?? DEFAULT_HTTP_PORT);
  if (flags.get("--host") !== "0.0.0.0") problem(where, "the front end must listen on --host=0.0.0.0 (probes and Services come from outside the pod)");
  for (const probe of ["readinessProbe", "livenessProbe"]) {
    const get = container[probe]?.httpGet;
    if (!get) { problem(where, `${probe} missing (an httpGet on /health)`); continue; }
    if (get.path !== "/health") problem(where, `${probe} checks ${get.path}, not /health`);
    const probePort = typeof get.port === "string" ? containerPorts(template).find((p) => p.name === get.port)?.containerPort : get.port;
    if (probePort !== port) problem(where, `${probe} port ${get.port} is not --port ${port}`);
  }
  if (!containerPorts(template).some((p) => p.containerPort === port)) problem(where, `no containerPort for --port ${port}`);
  const drain = Number(flags.get("--shutdown-timeout") ?? DEFAULT_SHUTDOWN_TIMEOUT_S);
  const grace = template.spec.terminationGracePeriodSeconds ?? DEFAULT_GRACE_PERIOD_S;
  if (!(grace > drain)) problem(where, `terminationGracePeriodSeconds ${grace} does not exceed --shutdown-timeout ${drain}`);
}

function gpusOf(container) {
  return Number(container?.resources?.limits?.["nvidia.com/gpu"] ?? 0);
}

function checkLeaderWorkerSet(where, lws) {
  if (lws.apiVersion !== LWS_API) problem(where, `apiVersion ${lws.apiVersion}, expected ${LWS_API}`);
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(lws.metadata?.name ?? "")) problem(where, "metadata.name is not a DNS-1123 label");
  const spec = lws.spec ?? {};
  for (const key of Object.keys(spec)) if (!LWS_SPEC_FIELDS.includes(key)) problem(where, `unknown field spec.${key}`);
  if (spec.replicas !== undefined && !(Number.isInteger(spec.replicas) && spec.replicas >= 0)) problem(where, "spec.replicas must be an integer >= 0");
  const t = spec.leaderWorkerTemplate;
  if (!t) return problem(where, "spec.leaderWorkerTemplate missing");
  for (const key of Object.keys(t)) if (!LWS_TEMPLATE_FIELDS.includes(key)) problem(where, `unknown field spec.leaderWorkerTemplate.${key}`);
  if (!(Number.isInteger(t.size) && t.size >= 1)) problem(where, "leaderWorkerTemplate.size must be an integer >= 1");
  if (t.restartPolicy !== undefined && !LWS_RESTART_POLICIES.includes(t.restartPolicy)) {
    problem(where, `leaderWorkerTemplate.restartPolicy ${t.restartPolicy} is not one of ${LWS_RESTART_POLICIES.join(", ")}`);
  }
  if (!t.leaderTemplate || !t.workerTemplate) return problem(where, "leaderTemplate and workerTemplate are both needed (they run different commands)");
  schemaCheck(`${where} leaderTemplate`, PodTemplateSpec, t.leaderTemplate);
  schemaCheck(`${where} workerTemplate`, PodTemplateSpec, t.workerTemplate);
  checkFrontEndPod(`${where} leaderTemplate`, t.leaderTemplate);

  const leader = serveContainer(`${where} leaderTemplate`, t.leaderTemplate);
  const worker = serveContainer(`${where} workerTemplate`, t.workerTemplate);
  if (!leader || !worker) return;
  const lf = serveFlags(containerArgv(leader));
  const wf = serveFlags(containerArgv(worker));
  // --shutdown-timeout too: a worker pod waits that long (plus a margin) for the leader's drain.
  for (const flag of ["--tp", "--nnodes", "--dist-init-addr", "--dedicated-frontend", "--model", "--preset", "--load-format", "--device",
                      "--shutdown-timeout"]) {
    if (lf.get(flag) !== wf.get(flag)) problem(where, `leader and worker disagree on ${flag}: ${lf.get(flag)} vs ${wf.get(flag)}`);
  }
  if (lf.get("--node-rank") !== "0") problem(where, "the leader must run --node-rank=0");
  if (wf.get("--node-rank") !== "$(LWS_WORKER_INDEX)") problem(where, "workers must run --node-rank=$(LWS_WORKER_INDEX)");
  const nnodes = lf.get("--nnodes");
  if (nnodes !== "$(LWS_GROUP_SIZE)" && Number(nnodes) !== t.size) problem(where, `--nnodes ${nnodes} is neither $(LWS_GROUP_SIZE) nor size ${t.size}`);
  const leaderGrace = t.leaderTemplate.spec?.terminationGracePeriodSeconds ?? DEFAULT_GRACE_PERIOD_S;
  const workerGrace = t.workerTemplate.spec?.terminationGracePeriodSeconds ?? DEFAULT_GRACE_PERIOD_S;
  if (workerGrace < leaderGrace) {
    problem(where, `worker pods' terminationGracePeriodSeconds ${workerGrace} is shorter than the leader's ${leaderGrace}: they would be killed mid-drain`);
  }
  // With --dedicated-frontend the leader hosts no rank and the worker pods share them all.
  const dedicated = [true, "true"].includes(lf.get("--dedicated-frontend"));
  const rankPods = dedicated ? t.size - 1 : t.size;
  const tp = Number(lf.get("--tp") ?? 1);
  if (!(rankPods >= 1) || tp % rankPods !== 0) problem(where, `--tp ${tp} does not split over the ${rankPods} pods that host ranks`);
  const [host, controlPort] = String(lf.get("--dist-init-addr") ?? "").split(":");
  if (host !== "$(LWS_LEADER_ADDRESS)") problem(where, "--dist-init-addr must be $(LWS_LEADER_ADDRESS):PORT");
  if (!containerPorts(t.leaderTemplate).some((p) => p.containerPort === Number(controlPort))) {
    problem(where, `the leader exposes no containerPort for the control plane port ${controlPort}`);
  }
  for (const [name, c, ranks] of [["leader", leader, dedicated ? 0 : tp / rankPods], ["worker", worker, tp / rankPods]]) {
    if (gpusOf(c) && gpusOf(c) !== ranks) problem(where, `the ${name} asks for ${gpusOf(c)} GPUs but runs ${ranks} ranks`);
  }
}

// Pod templates a Service in the same file could select, with the labels they carry.
function podTemplates(doc) {
  if (doc.kind === "Deployment") return [doc.spec?.template];
  if (doc.kind === "LeaderWorkerSet") return [doc.spec?.leaderWorkerTemplate?.leaderTemplate, doc.spec?.leaderWorkerTemplate?.workerTemplate];
  return [];
}

function checkService(where, service, docs) {
  const selector = service.spec?.selector ?? {};
  if (!Object.keys(selector).length) return problem(where, "a Service without a selector");
  const selected = docs.flatMap(podTemplates).filter((t) =>
    t && Object.entries(selector).every(([k, v]) => t.metadata?.labels?.[k] === v));
  if (!selected.length) return problem(where, `selector ${JSON.stringify(selector)} matches no pod template in the file`);
  for (const port of service.spec?.ports ?? []) {
    const target = port.targetPort ?? port.port;
    for (const t of selected) {
      const ok = containerPorts(t).some((p) => p.containerPort === target || p.name === target);
      if (!ok) problem(where, `port ${port.name ?? port.port}: targetPort ${target} is not a containerPort of a selected pod`);
    }
  }
}

function checkKubernetesFile(file) {
  const text = fs.readFileSync(file, "utf8");
  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true }).map((d, i) => {
    for (const e of d.errors) problem(`${file} document ${i + 1}`, `YAML: ${e.message}`);
    return d.toJS();
  }).filter(Boolean);
  docs.forEach((doc, i) => {
    const where = `${path.relative(sourceDir, file)} ${doc.kind ?? "?"} ${doc.metadata?.name ?? `#${i + 1}`}`;
    switch (doc.kind) {
      case "Deployment":
        schemaCheck(where, Deployment, doc);
        checkFrontEndPod(where, doc.spec?.template);
        break;
      case "Service":
        schemaCheck(where, Service, doc);
        checkService(where, doc, docs);
        break;
      case "LeaderWorkerSet":
        checkLeaderWorkerSet(where, doc);
        break;
      default:
        problem(where, `no check for kind ${doc.kind}`);
    }
  });
  return docs;
}

// Shell-like words of a line (enough for these files: no nested quoting).
function words(line) {
  return line.match(/"[^"]*"|'[^']*'|\S+/g)?.map((w) => w.replace(/^["']|["']$/g, "")) ?? [];
}

// `serve` command lines in the non-Kubernetes files: [where, argv].
function otherServeCommands() {
  const found = [];
  const lines = (file) => fs.readFileSync(path.join(sourceDir, file), "utf8").split("\n");
  lines("deploy/systemd/deltaserve.service").forEach((l, i) => {
    if (l.startsWith("ExecStart=")) found.push([`deploy/systemd/deltaserve.service:${i + 1}`, words(l.slice(10))]);
  });
  lines("deploy/slurm/deltaserve.sbatch").forEach((l, i) => {
    if (/\bserve\b.*--/.test(l) && !l.trimStart().startsWith("#")) found.push([`deploy/slurm/deltaserve.sbatch:${i + 1}`, words(l.replace(/'/g, " "))]);
  });
  lines("deploy/Dockerfile").forEach((l, i) => {
    if (l.startsWith("CMD [")) found.push([`deploy/Dockerfile:${i + 1}`, JSON.parse(l.slice(4))]);
  });
  if (fs.existsSync(path.join(sourceDir, "docs/deploy.md"))) {
    lines("docs/deploy.md").forEach((l, i) => {
      if (/deltaserve serve\b/.test(l) || /^\s*--[a-z]/.test(l)) found.push([`docs/deploy.md:${i + 1}`, ["serve", ...words(l.split(/\bserve\b/).pop())]]);
    });
  }
  return found;
}

const help = execFileSync(binary, ["serve", "--help"], { encoding: "utf8" });
const knownFlags = new Set(help.match(/--[a-z][a-z0-9-]*/g));
if (knownFlags.size < 10) problem("deltaserve serve --help", `lists only ${knownFlags.size} flags`);

const kubernetesFiles = fs.readdirSync(path.join(deployDir, "kubernetes")).filter((f) => /\.ya?ml$/.test(f))
  .map((f) => path.join(deployDir, "kubernetes", f));
const commands = [];
let resources = 0;
for (const file of kubernetesFiles) {
  const docs = checkKubernetesFile(file);
  resources += docs.length;
  for (const doc of docs) {
    for (const t of podTemplates(doc)) {
      for (const c of t?.spec?.containers ?? []) commands.push([`${path.relative(sourceDir, file)} ${doc.kind} ${doc.metadata?.name} ${c.name}`, containerArgv(c)]);
    }
  }
}
commands.push(...otherServeCommands());
let flagsChecked = 0;
for (const [where, argv] of commands) {
  for (const flag of serveFlags(argv).keys()) {
    ++flagsChecked;
    if (!knownFlags.has(flag)) problem(where, `\`deltaserve serve\` has no flag ${flag}`);
  }
}
if (!flagsChecked) problem("flags", "found no serve flags to check (the file parsing is broken)");

if (problems.length) {
  for (const p of problems) console.error(`FAIL: ${p}`);
  process.exit(1);
}
console.log(`ok: ${kubernetesFiles.length} Kubernetes files, ${resources} resources; ${flagsChecked} serve flags in ${commands.length} command lines known to \`deltaserve serve --help\``);
