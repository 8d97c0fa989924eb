// Task detail: status (and why it failed), start/stop, per-round metrics as a chart that
// follows the run (polled every 2 s while the task runs), client reports, the definition.

import {
  ApiError,
  announce,
  api,
  apiBlob,
  byId,
  chips,
  clientUrl,
  el,
  endpoint,
  every,
  formatBytes,
  getSchemas,
  initPage,
  param,
  statusBadge,
  timeElement,
} from "../app.js";
import { renderMetrics } from "../chart.js";
import { formatArguments } from "../forms.js";
import { propertySchema, validate } from "../schema.js";

const RUNNING_MS = 2000;
const IDLE_MS = 10000;

function argumentsBlock(args) {
  const text = formatArguments(args);
  return text ? el("pre", {}, text) : el("span", { class: "muted" }, "none");
}

function filesList(task) {
  const files = task.files;
  if (!files.length) {
    const upload = `upload.html?id=${encodeURIComponent(task.id)}`;
    return el("span", { class: "muted" }, "none yet (", el("a", { href: upload }, "upload"), ")");
  }
  return el(
    "ul",
    { id: "task-files" },
    files.map((f) =>
      el("li", {}, el("code", {}, f.name), ` — ${formatBytes(f.size)}, sha256 `,
        el("code", { title: f.sha256 }, f.sha256.slice(0, 12)), "…"),
    ),
  );
}

const KINDS = { flower_app: "Flower App", script: "Script task" };

function kindText(task) {
  if (!task.kind) return el("span", { class: "muted" }, "not known until its files are uploaded");
  const text = KINDS[task.kind] || task.kind;
  return el("span", { id: "task-kind", dataset: { kind: task.kind } }, text);
}

function definition(task) {
  const rows = [
    ["Kind", kindText(task)],
    ["Server", el("code", {}, endpoint(task))],
    ["Devices per run", String(task.devices)],
    ["Fewest devices", task.min_devices === null || task.min_devices === undefined
      ? el("span", { class: "muted" }, "all of them")
      : String(task.min_devices)],
    ["Run deadline", task.deadline_s === null || task.deadline_s === undefined
      ? el("span", { class: "muted" }, "the cloud's default")
      : `${task.deadline_s} s`],
    ["Selection criteria", task.selection_criteria
      ? el("code", {}, task.selection_criteria) : el("span", { class: "muted" }, "every client")],
    ["Server arguments", argumentsBlock(task.server_arguments)],
    ["Client arguments", argumentsBlock(task.client_arguments)],
    ["Tags", chips(task.tags)],
    ["Files", filesList(task)],
    ["Runs", String(task.runs)],
    ["Created", timeElement(task.created)],
    ["Last change", timeElement(task.modified)],
    ["Last started", timeElement(task.started_at)],
    ["Last ended", timeElement(task.ended_at)],
  ];
  return el("dl", { class: "details" }, rows.map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

function reportsTable(reports) {
  if (!reports.length) return el("p", { class: "muted" }, "No client has reported on this task yet.");
  return el(
    "table",
    { class: "responsive", id: "reports-table" },
    el("caption", { class: "visually-hidden" }, "Client reports, newest first"),
    el("thead", {}, el("tr", {}, ["Client", "Status", "Reason", "When"].map((h) => el("th", { scope: "col" }, h)))),
    el(
      "tbody",
      {},
      reports.map((r) =>
        el(
          "tr",
          { dataset: { status: r.status } },
          el("th", { scope: "row", "data-label": "Client" }, el("a", { href: clientUrl(r.client_id) }, r.client_id)),
          el("td", { "data-label": "Status" }, statusBadge(r.status)),
          el("td", { "data-label": "Reason" }, r.reason ? el("pre", {}, r.reason) : el("span", { class: "muted" }, "—")),
          el("td", { "data-label": "When" }, timeElement(r.reported_at)),
        ),
      ),
    ),
  );
}

function devicesTable(devices) {
  if (!devices.seats.length) return el("p", { class: "muted" }, "No device has joined this run yet.");
  const inRun = devices.seats.filter((d) => d.left === null || d.left === undefined).length;
  const since = (unix) => timeElement(new Date(unix * 1000).toISOString());
  return [
    el("p", { id: "devices-note" },
      `Run ${devices.run}: ${inRun} of ${devices.devices} device(s) in, at least ${devices.min_devices} needed.`),
    el(
      "table",
      { class: "responsive", id: "devices-table" },
      el("caption", { class: "visually-hidden" }, "The run's devices, in the order they joined"),
      el("thead", {}, el("tr", {}, ["Device", "Partition", "Joined", "Rounds trained", "Now"].map((h) => el("th", { scope: "col" }, h)))),
      el(
        "tbody",
        {},
        devices.seats.map((d) => {
          const gone = d.left !== null && d.left !== undefined;
          const origin = d.replaced ? `replaced ${d.replaced}, ` : d.rejoined ? "came back, " : "";
          const now = gone
            ? `left after round ${d.left_after_round}: ${d.why_left || ""}${d.replaced_by ? `; replaced by ${d.replaced_by}` : ""}`
            : "in the run";
          return el(
            "tr",
            { dataset: { state: gone ? "left" : "in" } },
            el("th", { scope: "row", "data-label": "Device" }, el("a", { href: clientUrl(d.client_id) }, d.client_id)),
            el("td", { "data-label": "Partition" }, String(d.partition_id)),
            el("td", { "data-label": "Joined" }, `${origin}after round ${d.joined_after_round}, `, since(d.joined)),
            el("td", { "data-label": "Rounds trained" }, String(d.rounds_trained)),
            el("td", { "data-label": "Now" }, now),
          );
        }),
      ),
    ),
  ];
}

const IMAGE = /\.(png|jpe?g)$/i;

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function download(path, name, button) {
  button.disabled = true;
  try {
    saveBlob(await apiBlob(path), name);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      announce(`Could not download ${name}: ${error.message}`, "error");
    }
  } finally {
    button.disabled = false;
  }
}

function showImage(figure, path) {
  apiBlob(path)
    .then((blob) => {
      const img = el("img", { src: URL.createObjectURL(blob), alt: figure.dataset.path });
      figure.prepend(img);
    })
    .catch(() => figure.append(el("span", { class: "muted" }, " (could not be shown)")));
}

function resultsView(base, listing) {
  if (!listing) return el("p", { class: "muted" }, "No run yet.");
  const files = listing.files;
  if (!files.length) {
    return el("p", { class: "muted" }, `Run ${listing.run} has no results yet.`);
  }
  const fileUrl = (path) => `${base}/runs/${listing.run}/results/${path.split("/").map(encodeURIComponent).join("/")}`;
  const zipName = `task-${listing.task_id}-run-${listing.run}.zip`;
  const all = el("button", { type: "button", id: "results-zip" }, `Download all (${formatBytes(listing.total_bytes)}, .zip)`);
  all.addEventListener("click", () => download(`${base}/runs/${listing.run}/results.zip`, zipName, all));
  const rows = files.map((f) => {
    const button = el("button", { type: "button", class: "link-button" }, "Download");
    const name = f.path.split("/").pop();
    button.addEventListener("click", () => download(fileUrl(f.path), name, button));
    return el(
      "tr",
      { dataset: { path: f.path } },
      el("th", { scope: "row", "data-label": "File" }, el("code", {}, f.path)),
      el("td", { "data-label": "From" }, f.client_id ? el("a", { href: clientUrl(f.client_id) }, f.client_id) : "server"),
      el("td", { "data-label": "Size" }, formatBytes(f.size)),
      el("td", { "data-label": "Stored" }, timeElement(f.stored_at)),
      el("td", { "data-label": "" }, button),
    );
  });
  const images = files.filter((f) => IMAGE.test(f.path)).map((f) => {
    const figure = el("figure", { class: "result-image", dataset: { path: f.path } }, el("figcaption", {}, f.path));
    showImage(figure, fileUrl(f.path));
    return figure;
  });
  return el(
    "div",
    {},
    el("p", {}, `Run ${listing.run}: ${files.length} file${files.length === 1 ? "" : "s"}. `, all),
    el(
      "table",
      { class: "responsive", id: "results-table" },
      el("caption", { class: "visually-hidden" }, "Result files of the run"),
      el("thead", {}, el("tr", {}, ["File", "From", "Size", "Stored", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows),
    ),
    images.length ? el("div", { class: "result-images", id: "result-images" }, images) : "",
  );
}

function statusNote(task) {
  if (task.status === "running") return ["running since ", timeElement(task.started_at)];
  if (task.ended_at) return ["since ", timeElement(task.ended_at)];
  return ["since ", timeElement(task.created)];
}

initPage(async () => {
  const id = param("id") || "";
  const schemas = await getSchemas();
  const idSchema = propertySchema(schemas.rpc_exec_get_task_by_id, "task_id").schema;
  const idErrors = validate(idSchema, id, schemas.rpc_exec_get_task_by_id);
  if (idErrors.length) {
    byId("content").replaceChildren(
      el("h1", {}, "Task"),
      el("p", {}, id ? `"${id}" is not a task id. ${idErrors[0].message}` : "No task was chosen. ",
        el("a", { href: "index.html" }, "Pick one on the dashboard"), "."),
    );
    return;
  }
  const path = `/api/tasks/${encodeURIComponent(id)}`;
  const query = `?id=${encodeURIComponent(id)}`;
  document.title = `Task ${id} · AGATA`;
  byId("task-title").textContent = `Task ${id}`;
  byId("start-link").href = `start.html${query}`;
  byId("update-link").href = `update.html${query}`;
  byId("upload-link").href = `upload.html${query}`;

  const startButton = byId("start-button");
  const stopButton = byId("stop-button");
  const actionError = byId("action-error");
  const runSelect = byId("run-select");
  let task = null;
  let keys = {};
  let poller = null;

  const changed = (name, value) => {
    const key = JSON.stringify(value);
    if (keys[name] === key) return false;
    keys[name] = key;
    return true;
  };

  const showTask = (next) => {
    const previous = task;
    task = next;
    if (changed("status", [next.status, next.status_reason, next.started_at, next.ended_at])) {
      byId("task-status").replaceChildren(statusBadge(next.status));
      byId("task-status").dataset.status = next.status;
      byId("task-status-note").replaceChildren(...statusNote(next));
      byId("task-reason").replaceChildren(
        next.status_reason
          ? el("p", { id: "status-reason" }, el("strong", {}, "Reason: "), next.status_reason)
          : "",
      );
      if (previous && previous.status !== next.status) {
        announce(`Task ${id} is now ${next.status}.`, next.status === "failed" ? "error" : "info");
      }
    }
    startButton.disabled = next.status === "running";
    stopButton.disabled = next.status !== "running";
    if (changed("runs", next.runs)) {
      const chosen = runSelect.value;
      runSelect.replaceChildren(
        el("option", { value: "0" }, next.runs ? `Latest (run ${next.runs})` : "Latest"),
        ...Array.from({ length: next.runs }, (_, i) => next.runs - i).map((run) =>
          el("option", { value: String(run) }, `Run ${run}`),
        ),
      );
      if ([...runSelect.options].some((o) => o.value === chosen)) runSelect.value = chosen;
    }
    if (changed("definition", next)) byId("definition").replaceChildren(definition(next));
  };

  const refresh = async () => {
    let next;
    try {
      next = await api(path);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        poller?.stop();
        byId("content").replaceChildren(
          el("h1", {}, `Task ${id}`),
          el("p", {}, `There is no task ${id}. `, el("a", { href: "index.html" }, "Back to the dashboard"), "."),
        );
        return;
      }
      throw error;
    }
    const run = runSelect.value && runSelect.value !== "0" ? `?run=${runSelect.value}` : "";
    const runNumber = runSelect.value || "0";
    const [metrics, reports, results, devices] = await Promise.all([
      api(`${path}/metrics${run}`),
      api(`${path}/reports`),
      next.runs ? api(`${path}/runs/${runNumber}/results`) : Promise.resolve(null),
      api(`${path}/devices`),
    ]);
    showTask(next);
    if (changed("metrics", metrics)) {
      renderMetrics(byId("metrics"), metrics.rounds);
    }
    byId("metrics-note").textContent =
      `Run ${metrics.run || "—"}: ${metrics.rounds.length} round${metrics.rounds.length === 1 ? "" : "s"}` +
      (next.status === "running" ? "; updating every 2 s while the task runs." : ".");
    if (changed("devices", devices)) byId("devices").replaceChildren(...[devicesTable(devices)].flat());
    if (changed("reports", reports)) byId("reports").replaceChildren(reportsTable(reports.reports));
    if (changed("results", results)) byId("results").replaceChildren(resultsView(path, results));
    poller?.setInterval(next.status === "running" ? RUNNING_MS : IDLE_MS);
  };

  const act = async (button, verb) => {
    actionError.textContent = "";
    button.disabled = true;
    let failed = false;
    try {
      const next = await api(`${path}/${verb}`, { method: "POST" });
      showTask(next);
      announce(
        verb === "start" ? `Task ${id} started (run ${next.runs}).` : `Task ${id} is ${next.status}.`,
        "ok",
      );
      await refresh();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      failed = true;
      actionError.textContent = `Could not ${verb} the task: ${error.message}`;
    } finally {
      if (task) {
        startButton.disabled = task.status === "running";
        stopButton.disabled = task.status !== "running";
      }
    }
    // Keep the keyboard focus on the page: on the button, or on the status it changed.
    if (failed && !button.disabled) button.focus();
    else byId("task-status").focus();
  };
  startButton.addEventListener("click", () => act(startButton, "start"));
  stopButton.addEventListener("click", () => act(stopButton, "stop"));
  runSelect.addEventListener("change", () => {
    keys.metrics = null;
    keys.results = null;
    refresh().catch((error) => announce(error.message, "error"));
  });

  poller = every(RUNNING_MS, refresh);
  window.addEventListener("pagehide", () => poller.stop());
});
