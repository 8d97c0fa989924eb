// One client's stats, as the user manager keeps them.

import { ApiError, api, byId, chips, el, formatNumber, initPage, param, timeElement } from "../app.js";

initPage(async () => {
  const id = param("id") || "";
  const box = byId("client-details");
  if (!id) {
    box.replaceChildren(el("p", {}, "No client was chosen. ", el("a", { href: "index.html" }, "Pick one on the dashboard"), "."));
    return;
  }
  document.title = `Client ${id} · AGATA`;
  byId("client-title").textContent = `Client ${id}`;
  let user;
  try {
    user = await api(`/api/clients/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 400)) {
      box.replaceChildren(el("p", {}, error.message));
      return;
    }
    throw error;
  }
  const rows = [
    ["Last seen", timeElement(user.last_seen)],
    ["Samples (data_qnt)", formatNumber(user.data_qnt)],
    ["Average accuracy contribution", formatNumber(user.avg_acc_contrib)],
    ["Disconnections per round", formatNumber(user.avg_disconnection_per_round)],
    ["Sensors", chips(user.sensors)],
    ["Registered", timeElement(user.created)],
    ["Stats changed", timeElement(user.modified)],
  ];
  box.replaceChildren(
    el("dl", { class: "details" }, rows.map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)])),
  );
});
