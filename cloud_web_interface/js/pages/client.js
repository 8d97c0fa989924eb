// One client's stats, as the user manager keeps them, and its credential (revoke it here).

import { ApiError, announce, api, byId, chips, el, formatNumber, initPage, param, timeElement } from "../app.js";

function credentialText(user) {
  if (user.revoked) return "Revoked: the device is refused until it is enrolled again.";
  if (user.enrolled) return "Enrolled: the device proves itself with its own secret.";
  return "Not enrolled: it has no credential of its own.";
}

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
  const credential = byId("client-credential");
  const revoke = byId("revoke-button");
  byId("enroll-link").href = `enroll.html?id=${encodeURIComponent(id)}`;
  const showCredential = (current) => {
    credential.textContent = credentialText(current);
    credential.dataset.state = current.revoked ? "revoked" : current.enrolled ? "enrolled" : "none";
    revoke.hidden = !current.enrolled || current.revoked;
  };
  showCredential(user);
  revoke.addEventListener("click", async () => {
    if (!window.confirm(`Revoke device ${id}? It is refused at once.`)) return;
    byId("revoke-error").textContent = "";
    revoke.disabled = true;
    try {
      await api(`/api/clients/${encodeURIComponent(id)}/revoke`, { method: "POST" });
      announce(`Device ${id} is revoked.`, "ok");
      showCredential(await api(`/api/clients/${encodeURIComponent(id)}`));
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        byId("revoke-error").textContent = `Could not revoke: ${error.message}`;
      }
    } finally {
      revoke.disabled = false;
    }
  });
});
