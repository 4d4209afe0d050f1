// The operator dashboard: counts per state, a page of jobs per state, one job's detail with its
// history and stack trace, retry and cancel, a finished preview played with its captions. The
// page holds no data: everything comes from the service's own signed API routes, polled every
// two seconds. With IAM (the template's default) requests are signed in the page with the
// ACCESS_KEY_ID:SECRET typed in (/docs/sigv4.js: WebCrypto, the secret never sent); with the
// emulator's --api-key mode the key goes in x-api-key. The credentials stay in this tab's
// sessionStorage.
(function () {
  "use strict";

  const POLL_MS = 2000;
  const STATES = ["waiting", "active", "delayed", "completed", "failed"];
  const $ = (id) => document.getElementById(id);
  const region = document.documentElement.dataset.region || "us-east-1";
  const query = new URLSearchParams(window.location.search);
  const limit = Math.min(100, Math.max(1, parseInt(query.get("limit") || "20", 10) || 20));

  const view = {
    mode: "open",                 // sigv4, apiKey or open: what /openapi.json says the routes want
    credentials: window.sessionStorage.getItem("preview-dashboard-credentials") || "",
    tab: STATES.includes(query.get("state")) ? query.get("state") : "waiting",
    cursors: [null],              // the cursor of each page seen so far; the last is the current one
    next: null,
    job: null,                    // the id of the job shown in the detail panel
    previewOf: null,              // the job whose preview the player holds
    timer: null,
  };

  // ------------------------------------------------------------------ requests

  class ApiError extends Error {
    constructor(message, status, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  async function api(method, path) {
    const url = new URL(path, window.location.href).toString();
    let headers = { accept: "application/json" };
    if (view.mode === "apiKey" && view.credentials) headers["x-api-key"] = view.credentials;
    if (view.mode === "sigv4" && view.credentials) {
      const request = { url, method, headers: { ...headers, Authorization: view.credentials }, body: "" };
      headers = (await window.previewSigV4.sign(request, region)).headers;
    }
    const response = await fetch(url, { method, headers, cache: "no-store" });
    let body = {};
    try {
      body = await response.json();
    } catch (ignored) {
      body = {};
    }
    if (!response.ok) {
      throw new ApiError(`${method} ${path}: ${response.status} ${body.message || response.statusText}`,
        response.status, body);
    }
    return body;
  }

  function notice(text, ok) {
    const line = $("notice");
    line.textContent = text || "";
    line.className = ok ? "ok" : "";
  }

  function explain(error) {
    if (error.status === 401 || error.status === 403) {
      return `${error.message} — check the credentials (${view.mode === "sigv4"
        ? "ACCESS_KEY_ID:SECRET_ACCESS_KEY of the emulator's local credentials" : "the API key"})`;
    }
    return error.message;
  }

  // ------------------------------------------------------------------ rendering

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function field(list, name, value) {
    if (value == null || value === "") return;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    dd.dataset.field = name;
    list.append(dt, dd);
  }

  function showCounts(counts) {
    for (const name of [...STATES, "total"]) {
      const badge = document.querySelector(`[data-count="${name}"]`);
      if (badge) badge.textContent = String(counts[name]);
    }
  }

  function showPage(page) {
    const body = $("jobs");
    body.replaceChildren();
    for (const job of page.jobs) {
      const row = document.createElement("tr");
      row.dataset.job = job.jobId;
      if (job.jobId === view.job) row.className = "selected";
      const link = document.createElement("a");
      link.href = `#${encodeURIComponent(job.jobId)}`;
      link.className = "job";
      link.textContent = job.jobId;
      link.addEventListener("click", (event) => {
        event.preventDefault();
        openJob(job.jobId);
      });
      cell(row, "").appendChild(link);
      cell(row, job.projectId);
      cell(row, job.priority);
      cell(row, `${job.attemptsMade}/${job.attemptsMax}`);
      cell(row, `${job.progress}%`);
      cell(row, job.createdAt);
      cell(row, job.finishedOn);
      cell(row, job.failedReason, "reason").title = job.failedReason || "";
      body.appendChild(row);
    }
    $("empty").hidden = page.jobs.length > 0;
    view.next = page.nextCursor;
    $("next").disabled = !page.nextCursor;
    $("first").disabled = view.cursors.length === 1;
    $("page-label").textContent = `page ${view.cursors.length}`;
    showCounts(page.counts);
  }

  function showDetail(job) {
    $("detail").hidden = false;
    $("detail-id").textContent = job.jobId;
    const badge = $("detail-state");
    badge.textContent = job.state;
    badge.className = `state ${job.state}`;
    $("retry").hidden = job.state !== "failed";
    $("cancel").hidden = !(job.state === "waiting" || job.state === "delayed");
    const progress = $("detail-progress");
    progress.hidden = job.state !== "active";
    progress.value = job.progress;

    const fields = $("detail-fields");
    fields.replaceChildren();
    field(fields, "project", job.projectId);
    field(fields, "priority", job.priority);
    field(fields, "attempts", `${job.attemptsMade} of ${job.attemptsMax}`);
    field(fields, "progress", `${job.progress}%`);
    field(fields, "created", job.createdAt);
    field(fields, "started", job.processedOn);
    field(fields, "finished", job.finishedOn);
    field(fields, "worker", job.worker);

    const request = $("request-fields");
    request.replaceChildren();
    $("request-title").hidden = !job.request;
    if (job.request) {
      const r = job.request;
      field(request, "title", r.title);
      field(request, "request id", r.requestId);
      field(request, "dry run", r.dryRun ? "yes" : "no");
      field(request, "steps", `${r.steps} (${r.durationSec} s)`);
      field(request, "assets", r.assets);
      field(request, "output", `${r.format}, ${r.resolution}, ${r.fps} fps, captions ${r.includeCaptions ? "on" : "off"}`);
    }

    $("reason-title").hidden = !job.failedReason;
    $("detail-reason").textContent = job.failedReason || "";
    const stack = $("detail-stack");
    stack.hidden = !job.stacktrace;
    stack.textContent = job.stacktrace || "";

    const history = $("detail-history");
    history.replaceChildren();
    $("history-title").hidden = job.history.length === 0;
    for (const entry of job.history) {
      const item = document.createElement("li");
      item.textContent = `failed after ${entry.attemptsMade} attempt(s) at ${entry.finishedOn || "?"}: ` +
        `${entry.failedReason || "(no reason)"}; retried at ${entry.retriedOn || "?"}`;
      history.appendChild(item);
    }
    for (const row of $("jobs").children) row.classList.toggle("selected", row.dataset.job === job.jobId);
  }

  async function showPreview(job) {
    const holder = $("preview");
    if (job.state !== "completed") {
      if (view.previewOf !== null) holder.replaceChildren();
      view.previewOf = null;
      return;
    }
    if (view.previewOf === job.jobId) return;  // keep the player as it is (its time, its state)
    view.previewOf = job.jobId;
    holder.replaceChildren();
    const artifact = await api("GET", `/api/preview/job/${encodeURIComponent(job.jobId)}/artifact`);
    const byType = (prefix) => artifact.files.find((f) => f.contentType.startsWith(prefix));
    const main = artifact.files.find((f) => f.url === artifact.url) || {};
    const contentType = main.contentType || "";
    if (contentType.startsWith("video/")) {
      const video = document.createElement("video");
      video.id = "player";
      video.controls = true;
      video.preload = "auto";
      video.crossOrigin = "anonymous";  // S3 links need the bucket's CORS rule (AllowedOrigins)
      const poster = byType("image/png");
      if (poster) video.poster = poster.url;
      video.src = artifact.url;
      const captions = byType("text/vtt");
      if (captions) {
        const track = document.createElement("track");
        track.kind = "captions";
        track.label = "Captions";
        track.srclang = "en";
        track.src = captions.url;
        track.default = true;
        video.appendChild(track);
      }
      holder.appendChild(video);
    } else if (contentType.startsWith("image/")) {
      const image = document.createElement("img");
      image.id = "player";
      image.src = artifact.url;
      image.alt = `preview of ${job.jobId}`;
      holder.appendChild(image);
    }
    const links = document.createElement("p");
    for (const file of artifact.files) {
      const link = document.createElement("a");
      link.href = file.url;
      link.textContent = file.name;
      link.target = "_blank";
      links.append(link, " ");
    }
    holder.appendChild(links);
  }

  // ------------------------------------------------------------------ actions

  async function loadPage() {
    const params = new URLSearchParams({ state: view.tab, limit: String(limit) });
    const cursor = view.cursors[view.cursors.length - 1];
    if (cursor) params.set("cursor", cursor);
    showPage(await api("GET", `/api/preview/jobs?${params}`));
  }

  async function loadDetail() {
    if (!view.job) return;
    let job;
    try {
      job = await api("GET", `/api/preview/job/${encodeURIComponent(view.job)}`);
    } catch (error) {
      if (error.status === 404) {
        notice(`${view.job} is no longer kept (retention dropped it)`);
        closeJob();
        return;
      }
      throw error;
    }
    showDetail(job);
    await showPreview(job);
  }

  async function refresh() {
    try {
      await Promise.all([loadPage(), loadDetail()]);
      document.body.dataset.updated = new Date().toISOString();
    } catch (error) {
      notice(explain(error));
    }
  }

  function schedule() {
    window.clearTimeout(view.timer);
    view.timer = window.setTimeout(async () => {
      await refresh();
      schedule();
    }, POLL_MS);
  }

  function selectTab(name) {
    view.tab = name;
    view.cursors = [null];
    for (const button of document.querySelectorAll("#states button")) {
      button.setAttribute("aria-pressed", String(button.dataset.state === name));
    }
    refresh();
  }

  function openJob(jobId) {
    view.job = jobId;
    refresh();
  }

  function closeJob() {
    view.job = null;
    view.previewOf = null;
    $("detail").hidden = true;
    $("preview").replaceChildren();
    for (const row of $("jobs").children) row.classList.remove("selected");
  }

  async function act(what) {
    const jobId = view.job;
    if (!jobId) return;
    try {
      const job = await api("POST", `/api/preview/job/${encodeURIComponent(jobId)}/${what}`);
      notice(what === "retry" ? `${jobId} queued again (${job.state}, fresh attempts)`
        : `${jobId} cancelled: ${job.failedReason}`, true);
    } catch (error) {
      notice(explain(error));
    }
    await refresh();
  }

  // ------------------------------------------------------------------ start

  async function start() {
    try {
      const doc = await (await fetch("/openapi.json", { cache: "no-store" })).json();
      const schemes = (doc.components || {}).securitySchemes || {};
      view.mode = schemes.sigv4 ? "sigv4" : schemes.apiKey ? "apiKey" : "open";
    } catch (error) {
      view.mode = "sigv4";
    }
    const input = $("credentials");
    input.value = view.credentials;
    if (view.mode === "apiKey") input.placeholder = "API key";
    $("mode").textContent = { sigv4: `signed with SigV4 (execute-api, ${region})`, apiKey: "API key",
      open: "no authorization" }[view.mode];
    $("auth").hidden = view.mode === "open";
    $("auth").addEventListener("submit", (event) => {
      event.preventDefault();
      view.credentials = input.value.trim();
      window.sessionStorage.setItem("preview-dashboard-credentials", view.credentials);
      notice("");
      refresh();
    });
    for (const button of document.querySelectorAll("#states button")) {
      button.addEventListener("click", () => selectTab(button.dataset.state));
    }
    $("next").addEventListener("click", () => {
      if (!view.next) return;
      view.cursors.push(view.next);
      refresh();
    });
    $("first").addEventListener("click", () => {
      view.cursors = [null];
      refresh();
    });
    $("retry").addEventListener("click", () => act("retry"));
    $("cancel").addEventListener("click", () => act("cancel"));
    $("close").addEventListener("click", closeJob);
    const hash = decodeURIComponent(window.location.hash.slice(1));
    if (hash) view.job = hash;
    selectTab(view.tab);
    schedule();
  }

  start();
})();
