// Dashboard: tasks (status, last change) and clients (last seen, stats), refreshed every 5 s.

import {
  ApiError,
  announce,
  api,
  byId,
  chips,
  clientUrl,
  el,
  endpoint,
  every,
  formatNumber,
  getSchemas,
  initPage,
  statusBadge,
  taskUrl,
  timeElement,
} from "../app.js";
import { nonNullSchema, propertySchema } from "../schema.js";

const LIMIT = 100;

function tasksTable(tasks) {
  if (tasks.length === 0) {
    return el("p", {}, "No tasks here yet. ", el("a", { href: "create.html" }, "Create a task"), ".");
  }
  return el(
    "table",
    { class: "responsive", id: "tasks-table" },
    el("caption", { class: "visually-hidden" }, "Tasks, newest first"),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ["Task", "Status", "Last change", "Runs", "Server", "Files", "Tags"].map((h) =>
          el("th", { scope: "col" }, h),
        ),
      ),
    ),
    el(
      "tbody",
      {},
      tasks.map((task) =>
        el(
          "tr",
          { dataset: { taskId: task.id } },
          el("th", { scope: "row", "data-label": "Task" }, el("a", { href: taskUrl(task.id) }, task.id)),
          el("td", { "data-label": "Status" }, statusBadge(task.status)),
          el("td", { "data-label": "Last change" }, timeElement(task.modified)),
          el("td", { "data-label": "Runs" }, String(task.runs)),
          el("td", { "data-label": "Server" }, el("code", {}, endpoint(task))),
          el("td", { "data-label": "Files" }, String(task.files.length)),
          el("td", { "data-label": "Tags" }, chips(task.tags)),
        ),
      ),
    ),
  );
}

function clientsTable(users) {
  if (users.length === 0) {
    return el("p", {}, "No client has registered yet.");
  }
  return el(
    "table",
    { class: "responsive", id: "clients-table" },
    el("caption", { class: "visually-hidden" }, "Clients, most recently seen first"),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ["Client", "Last seen", "Samples", "Avg accuracy contribution", "Disconnections per round",
          "Sensors"].map((h) => el("th", { scope: "col" }, h)),
      ),
    ),
    el(
      "tbody",
      {},
      users.map((user) =>
        el(
          "tr",
          { dataset: { clientId: user.id } },
          el("th", { scope: "row", "data-label": "Client" }, el("a", { href: clientUrl(user.id) }, user.id)),
          el("td", { "data-label": "Last seen" }, timeElement(user.last_seen)),
          el("td", { "data-label": "Samples" }, formatNumber(user.data_qnt)),
          el("td", { "data-label": "Avg accuracy contribution" }, formatNumber(user.avg_acc_contrib)),
          el("td", { "data-label": "Disconnections per round" },
            formatNumber(user.avg_disconnection_per_round)),
          el("td", { "data-label": "Sensors" }, chips(user.sensors)),
        ),
      ),
    ),
  );
}

async function fillStatusFilter(select) {
  const schemas = await getSchemas();
  const listSchema = schemas.rpc_exec_list_tasks;
  if (!listSchema) return;
  const status = nonNullSchema(propertySchema(listSchema, "status").schema || {}, listSchema);
  for (const value of status.enum || []) {
    select.append(el("option", { value }, value));
  }
}

/** Say on the page when the gateway's /health reports its disk full (hidden otherwise). */
async function showDisk() {
  const alert = byId("disk-alert");
  let health;
  try {
    health = await api("/health");
  } catch {
    return;
  }
  alert.hidden = health.disk !== "full";
  alert.textContent = alert.hidden
    ? ""
    : `The disk is full (${health.disk_detail}). Runs that cannot record are paused until space is freed.`;
}

initPage(async () => {
  const select = byId("status-filter");
  const wanted = new URLSearchParams(window.location.search).get("status");
  await fillStatusFilter(select);
  if (wanted && [...select.options].some((o) => o.value === wanted)) select.value = wanted;

  let lastTasks = "";
  let lastClients = "";
  const refresh = async () => {
    const status = select.value;
    const query = new URLSearchParams({ limit: String(LIMIT) });
    if (status) query.set("status", status);
    const [tasks, clients] = await Promise.all([
      api(`/api/tasks?${query}`),
      api(`/api/clients?limit=${LIMIT}`),
    ]);
    // Redraw only what changed, so keyboard focus and reading position stay put.
    const taskKey = JSON.stringify(tasks) + status;
    const tasksBox = byId("tasks");
    if (taskKey !== lastTasks || !tasksBox.contains(document.activeElement)) {
      lastTasks = taskKey;
      tasksBox.replaceChildren(tasksTable(tasks.tasks));
      byId("tasks-summary").textContent =
        `${tasks.total} task${tasks.total === 1 ? "" : "s"}${status ? ` ${status}` : ""}` +
        (tasks.total > tasks.tasks.length ? `; the newest ${tasks.tasks.length} are shown.` : ".");
    }
    const clientKey = JSON.stringify(clients);
    const clientsBox = byId("clients");
    if (clientKey !== lastClients || !clientsBox.contains(document.activeElement)) {
      lastClients = clientKey;
      clientsBox.replaceChildren(clientsTable(clients.users));
      byId("clients-summary").textContent =
        `${clients.total} client${clients.total === 1 ? "" : "s"}.`;
    }
    await showDisk();
    byId("updated-at").textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every 5 s.`;
  };

  const failed = (error) => {
    if (!(error instanceof ApiError && error.status === 401)) {
      announce(`Could not refresh: ${error.message}`, "error");
    }
  };
  const poller = every(5000, refresh);
  select.addEventListener("change", () => {
    const url = new URL(window.location.href);
    if (select.value) url.searchParams.set("status", select.value);
    else url.searchParams.delete("status");
    window.history.replaceState(null, "", url);
    refresh().catch(failed);
  });
  byId("refresh").addEventListener("click", () => refresh().catch(failed));
  window.addEventListener("pagehide", () => poller.stop());
});
