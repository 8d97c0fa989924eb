// Approve a pending `flwr login` (its code comes in the page's ?code=), or revoke the CLI's
// sessions.

import { announce, api, byId, initPage, param } from "../app.js";
import { busy, clearErrors, decorate, showApiError } from "../forms.js";

const CODE_SCHEMA = {
  type: "object",
  properties: {
    user_code: { type: "string", description: "The code your terminal shows, e.g. KMTR-QXBD." },
  },
  required: ["user_code"],
};

initPage(async () => {
  const form = byId("approve-form");
  decorate(form, CODE_SCHEMA, ["user_code"]);
  const code = param("code");
  if (code) form.elements.namedItem("user_code").value = code;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const userCode = form.elements.namedItem("user_code").value.trim();
    await busy(form, async () => {
      try {
        await api("/api/flwr/logins/approve", { method: "POST", json: { user_code: userCode } });
        announce(`Login ${userCode} approved: flwr login finishes in a moment.`, "ok");
      } catch (error) {
        showApiError(form, error, () => "user_code");
      }
    });
  });

  const revoke = byId("revoke-form");
  revoke.addEventListener("submit", async (event) => {
    event.preventDefault();
    await busy(revoke, async () => {
      const result = await api("/api/flwr/sessions/revoke", { method: "POST", json: {} });
      announce(`${result.revoked} CLI session(s) revoked.`, "ok");
    });
  });
});
