// Rebound admin: the one script. The pages are complete without it; it sends changes to the
// JSON API, shows the API's errors next to their fields, switches flows on and off, and keeps
// the email preview in step. Outside Shopify it authenticates with the session cookie and the
// CSRF header; inside Shopify (App Bridge) with a fresh id token as a bearer token.
(function () {
  "use strict";

  var embedded = document.documentElement.getAttribute("data-embedded") === "1";
  var csrf = null;

  function csrfToken() {
    if (csrf !== null) return Promise.resolve(csrf);
    var meta = document.querySelector('meta[name="rebound-csrf"]');
    if (meta) {
      csrf = meta.getAttribute("content");
      return Promise.resolve(csrf);
    }
    return fetch("/api/session", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : {}; })
      .then(function (body) { csrf = body.csrf || ""; return csrf; });
  }

  function authHeaders() {
    if (embedded && window.shopify && window.shopify.idToken) {
      return window.shopify.idToken().then(function (token) {
        return { Authorization: "Bearer " + token };
      });
    }
    return csrfToken().then(function (token) {
      return token ? { "X-Rebound-CSRF": token } : {};
    });
  }

  // fetch with the page's credentials; resolves to {ok, status, body} (body parsed when JSON).
  function api(method, url, body) {
    return authHeaders().then(function (auth) {
      var headers = { Accept: "application/json" };
      Object.keys(auth).forEach(function (k) { headers[k] = auth[k]; });
      var init = { method: method, headers: headers, credentials: "same-origin" };
      if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      return fetch(url, init);
    }).then(function (response) {
      var type = response.headers.get("content-type") || "";
      var read = type.indexOf("json") >= 0 ? response.json() : response.text();
      return read.then(function (data) {
        return { ok: response.ok, status: response.status, body: data };
      });
    });
  }

  // --- turning a form into JSON ------------------------------------------------------------

  function setPath(target, path, value) {
    var keys = path.split(".");
    var node = target;
    for (var i = 0; i < keys.length - 1; i++) {
      var key = /^\d+$/.test(keys[i]) ? Number(keys[i]) : keys[i];
      if (node[key] === undefined || node[key] === null) {
        node[key] = /^\d+$/.test(keys[i + 1]) ? [] : {};
      }
      node = node[key];
    }
    var last = keys[keys.length - 1];
    node[/^\d+$/.test(last) ? Number(last) : last] = value;
  }

  function number(text, parse) {
    var n = parse(text);
    return text.trim() !== "" && isFinite(n) ? n : text; // the API says what is wrong
  }

  // The value a field sends, or undefined to leave it out; throws {field, message} when the
  // browser can tell already that it is wrong.
  function fieldValue(el) {
    var kind = el.getAttribute("data-kind") || "";
    var raw = el.value;
    if (kind === "bool") return el.checked;
    if (kind === "optional") return raw.trim() === "" ? undefined : raw;
    if (el.type === "number" && raw.trim() !== "") {
      // The page's own bounds, in the merchant's units (a percent, not the API's share).
      var n = Number(raw);
      var min = el.getAttribute("min"), max = el.getAttribute("max");
      if ((min !== null && n < Number(min)) || (max !== null && n > Number(max))) {
        throw { field: el.name, message: max !== null ? "From " + (min || 0) + " to " + max + "." : "At least " + min + "." };
      }
    }
    if (raw.trim() === "" && kind.indexOf("nullable") === 0) return null;
    if (kind === "int" || kind === "nullable-int") return number(raw, function (t) { return /^-?\d+$/.test(t.trim()) ? parseInt(t, 10) : NaN; });
    if (kind === "float" || kind === "nullable-float") return number(raw, Number);
    if (kind === "percent") { var p = number(raw, Number); return typeof p === "number" ? p / 100 : p; }
    if (kind === "json") {
      try { return raw.trim() === "" ? null : JSON.parse(raw); }
      catch (e) { throw { field: el.name, message: "This is not valid JSON." }; }
    }
    return raw;
  }

  // Edit forms send only what the merchant changed: every change is a new version of a flow.
  function changed(el) {
    if (el.type === "checkbox" || el.type === "radio") return el.checked !== el.defaultChecked;
    if (el.tagName === "SELECT") {
      return Array.prototype.some.call(el.options, function (o) { return o.selected !== o.defaultSelected; });
    }
    return el.value !== el.defaultValue;
  }

  function remember(form) {
    Array.prototype.forEach.call(form.elements, function (el) {
      if (el.type === "checkbox" || el.type === "radio") el.defaultChecked = el.checked;
      else if (el.tagName === "SELECT") Array.prototype.forEach.call(el.options, function (o) { o.defaultSelected = o.selected; });
      else if ("defaultValue" in el) el.defaultValue = el.value;
    });
  }

  function formRequest(form) {
    var url = form.getAttribute("data-api");
    var used = {};
    url = url.replace(/\{(\w+)\}/g, function (_, name) {
      var el = form.elements.namedItem(name);
      used[name] = true;
      return encodeURIComponent(el ? el.value : "");
    });
    var body = JSON.parse(form.getAttribute("data-extra") || "{}");
    var changedOnly = form.hasAttribute("data-changed-only");
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || used[el.name] || el.disabled || el.type === "submit" || el.type === "hidden") return;
      if (changedOnly && !changed(el)) return;
      var value = fieldValue(el);
      if (value === undefined) return;
      if (el.getAttribute("data-kind") === "pair") {
        var names = el.name.split("/");
        var parts = String(value).split("/");
        names.forEach(function (n, i) { setPath(body, n, parts[i] || ""); });
        return;
      }
      setPath(body, el.name, value);
    });
    return { method: form.getAttribute("data-method") || "POST", url: url, body: body };
  }

  // --- errors next to their fields ---------------------------------------------------------

  function clearErrors(form) {
    form.querySelectorAll(".field-error").forEach(function (p) { p.remove(); });
    form.querySelectorAll('[aria-invalid="true"]').forEach(function (el) {
      el.removeAttribute("aria-invalid");
      var ids = (el.getAttribute("aria-describedby") || "").split(/\s+/).filter(function (id) {
        return id && id.slice(-6) !== "-error";
      });
      if (ids.length) el.setAttribute("aria-describedby", ids.join(" "));
      else el.removeAttribute("aria-describedby");
    });
    var formError = formErrorBox(form);
    if (formError) { formError.hidden = true; formError.textContent = ""; }
  }

  function formErrorBox(form) {
    var box = form.querySelector(".form-error");
    if (!box && form.parentElement) box = form.parentElement.querySelector(".form-error");
    return box;
  }

  function fieldFor(form, field) {
    var elements = Array.prototype.filter.call(form.elements, function (el) {
      return el.name && el.type !== "hidden" && el.type !== "submit";
    });
    var exact = elements.filter(function (el) {
      var names = [el.name].concat(el.name.split("/"), (el.getAttribute("data-fields") || "").split(/\s+/));
      return names.indexOf(field) >= 0;
    });
    if (exact.length) return exact[0];
    // "overrides" → the first overrides.* field; "settings.x.y" → the field named settings.x
    var inside = elements.filter(function (el) { return el.name.indexOf(field + ".") === 0; });
    if (inside.length) return inside[0];
    var around = elements.filter(function (el) { return field.indexOf(el.name + ".") === 0; });
    return around.length ? around[0] : null;
  }

  function showFieldError(el, message) {
    var id = (el.id || el.name.replace(/\W/g, "-")) + "-error";
    var p = document.createElement("p");
    p.className = "field-error";
    p.id = id;
    p.setAttribute("role", "alert");
    p.textContent = message;
    var wrapper = el.closest(".field") || el.parentElement;
    wrapper.appendChild(p);
    el.setAttribute("aria-invalid", "true");
    var described = el.getAttribute("aria-describedby");
    el.setAttribute("aria-describedby", described ? described + " " + id : id);
    // A field inside a closed <details> must be seen to be fixed.
    var details = el.closest("details");
    if (details) details.open = true;
  }

  function showFormError(form, message) {
    var box = formErrorBox(form);
    if (!box) { window.alert(message); return; }
    box.textContent = message;
    box.hidden = false;
  }

  function showErrors(form, response) {
    var detail = response.body && response.body.detail;
    if (response.status === 401) {
      showFormError(form, "Your session has ended. Reload the page to sign in again.");
      return;
    }
    if (!Array.isArray(detail)) {
      showFormError(form, typeof detail === "string" ? detail : "This could not be saved (error " + response.status + ").");
      return;
    }
    var first = null;
    var loose = [];
    detail.forEach(function (problem) {
      var field = problem.field || (problem.loc ? problem.loc.slice(1).join(".") : "");
      var message = problem.message || problem.msg || "This is not valid.";
      var el = field ? fieldFor(form, field) : null;
      if (el) { showFieldError(el, message); first = first || el; }
      else loose.push(message);
    });
    if (loose.length) showFormError(form, loose.join(" "));
    if (first) first.focus();
  }

  // --- forms -------------------------------------------------------------------------------

  function status(form, text) {
    var box = form.querySelector(".form-status") || document.getElementById("page-status");
    if (box) box.textContent = text;
  }

  function submit(event) {
    var form = event.target;
    if (!form.matches("form[data-api]")) return;
    event.preventDefault();
    var confirmText = form.getAttribute("data-confirm");
    if (confirmText && !window.confirm(confirmText)) return;
    clearErrors(form);
    status(form, "");
    var request;
    try { request = formRequest(form); }
    catch (problem) { showErrors(form, { status: 422, body: { detail: [problem] } }); return; }
    if (form.hasAttribute("data-changed-only") && Object.keys(request.body).length === 0) {
      status(form, "Nothing has changed.");
      return;
    }
    var button = form.querySelector('[type="submit"]');
    // Busy, not disabled: a disabled button loses the keyboard focus to <body>.
    if (form.getAttribute("data-busy")) return;
    busy(form, button, true);
    status(form, "Saving…");
    api(request.method, request.url, request.body).then(function (response) {
      busy(form, button, false);
      if (!response.ok) { status(form, ""); showErrors(form, response); return; }
      if (form.hasAttribute("data-changed-only")) remember(form);
      status(form, form.getAttribute("data-done") || "Saved.");
      if (form.hasAttribute("data-go")) window.location.assign(form.getAttribute("data-go"));
      else if (form.hasAttribute("data-reload")) window.location.reload();
      else if (form.closest(".editor")) refreshPreview();
    }, function () {
      busy(form, button, false);
      status(form, "");
      showFormError(form, "Rebound could not be reached. Check your connection and try again.");
    });
  }

  function busy(holder, button, on) {
    if (on) holder.setAttribute("data-busy", "1"); else holder.removeAttribute("data-busy");
    if (button) {
      if (on) button.setAttribute("aria-disabled", "true"); else button.removeAttribute("aria-disabled");
    }
  }

  // --- flow switches -----------------------------------------------------------------------

  function toggle(button) {
    var flow = button.getAttribute("data-flow-toggle");
    var on = button.getAttribute("aria-pressed") !== "true";
    var scope = button.closest(".card, .page-head, main") || document;
    var errorBox = scope.querySelector(".form-error") || document.querySelector("main > .form-error");
    if (errorBox) errorBox.hidden = true;
    if (button.getAttribute("data-busy")) return;
    busy(button, button, true);
    api("PATCH", "/api/flows/" + encodeURIComponent(flow), { enabled: on }).then(function (response) {
      busy(button, button, false);
      if (!response.ok) {
        var message = (response.body && response.body.detail) || "The flow could not be switched.";
        if (Array.isArray(message)) message = message.map(function (d) { return d.message || d.msg; }).join(" ");
        if (errorBox) { errorBox.textContent = message; errorBox.hidden = false; }
        return;
      }
      document.querySelectorAll('[data-flow-toggle="' + flow + '"]').forEach(function (b) {
        b.setAttribute("aria-pressed", on ? "true" : "false");
        var text = b.querySelector(".toggle-text");
        if (text) text.textContent = on ? "On" : "Off";
        var holder = b.closest(".flow-card-head, .head-toggle");
        var stateBadge = holder && holder.querySelector("[data-state-badge]");
        if (stateBadge) {
          stateBadge.textContent = on ? "Running" : "Off";
          stateBadge.className = "badge " + (on ? "badge-success" : "badge-off");
        }
      });
      var live = document.getElementById("page-status");
      if (live) live.textContent = flow.replace(/_/g, " ") + " is " + (on ? "on" : "off") + ".";
    }, function () {
      busy(button, button, false);
      if (errorBox) { errorBox.textContent = "Rebound could not be reached."; errorBox.hidden = false; }
    });
  }

  // --- the email preview -------------------------------------------------------------------

  function previewUrl(controls) {
    var step = controls.elements.namedItem("step").value;
    var lang = controls.elements.namedItem("lang").value;
    return controls.getAttribute("data-preview-base") + encodeURIComponent(step) +
      "/preview?lang=" + encodeURIComponent(lang) + "&format=html";
  }

  function loadPreview(frame, url, title) {
    if (title) frame.title = title;
    if (!embedded) {
      frame.removeAttribute("srcdoc");
      frame.src = url;
      var link = document.querySelector("[data-preview-link]");
      if (link) link.href = url;
      return;
    }
    // Inside Shopify there is no cookie: fetch with the id token and show the HTML in place.
    frame.srcdoc = "<p style='font:14px sans-serif;color:#616161'>Loading…</p>";
    api("GET", url).then(function (response) {
      frame.srcdoc = response.ok ? response.body : "<p style='font:14px sans-serif'>The preview could not be made.</p>";
    });
  }

  function refreshPreview() {
    var controls = document.querySelector("[data-preview-controls]");
    var frame = document.querySelector(".preview-frame");
    if (controls && frame) loadPreview(frame, previewUrl(controls) + "&t=" + Date.now());
  }

  function previewChanged(controls) {
    var frame = document.querySelector(".preview-frame");
    if (!frame) return;
    var step = controls.elements.namedItem("step");
    var lang = controls.elements.namedItem("lang");
    var title = "Email preview: step " + step.value + ", " + lang.options[lang.selectedIndex].text;
    loadPreview(frame, previewUrl(controls), title);
    // The test form follows the preview.
    var test = document.querySelector("[data-test-form]");
    if (test) {
      test.elements.namedItem("step").value = step.value;
      test.elements.namedItem("lang").value = lang.value;
    }
  }

  // --- downloads that need the bearer token inside Shopify ---------------------------------

  function download(link) {
    authHeaders().then(function (auth) {
      return fetch(link.href, { headers: auth, credentials: "same-origin" });
    }).then(function (response) {
      if (!response.ok) throw new Error(String(response.status));
      return response.blob();
    }).then(function (blob) {
      var url = URL.createObjectURL(blob);
      var a = document.createElement("a");
      a.href = url;
      a.download = link.getAttribute("data-api-download") || "export.json";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
    }).catch(function () {
      window.alert("The export could not be downloaded.");
    });
  }

  // --- wiring ------------------------------------------------------------------------------

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches("[data-preview-controls]")) {
      event.preventDefault();
      previewChanged(form);
      return;
    }
    submit(event);
  });

  document.addEventListener("change", function (event) {
    var controls = event.target.closest("[data-preview-controls]");
    if (controls) previewChanged(controls);
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-flow-toggle]");
    if (button) { event.preventDefault(); toggle(button); return; }
    var previewLink = event.target.closest("[data-preview-step]");
    var controls = document.querySelector("[data-preview-controls]");
    if (previewLink && controls) {
      event.preventDefault();
      controls.elements.namedItem("step").value = previewLink.getAttribute("data-preview-step");
      previewChanged(controls);
      var pane = document.getElementById("preview");
      if (pane) { pane.scrollIntoView({ block: "start" }); pane.focus({ preventScroll: true }); }
      return;
    }
    var exportLink = event.target.closest("[data-api-download]");
    if (exportLink && embedded) { event.preventDefault(); download(exportLink); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    // Inside Shopify the preview frame starts empty: it needs the id token to load.
    var frame = document.querySelector(".preview-frame[data-src]");
    if (frame) loadPreview(frame, frame.getAttribute("data-src"));
  });
})();
