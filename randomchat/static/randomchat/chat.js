/* randomchat's page: one STOMP connection, the /start form, the dialog. Plain DOM, no HTML
   from the network: every text from the server goes through textContent. */
(function () {
  "use strict";

  var PAIRED = 10, START_REFUSED = 11, MESSAGE = 20, MESSAGE_REFUSED = 21, LEFT = 30, STOP_REFUSED = 31;
  var REPORTED = 40, REPORT_REFUSED = 41;
  var RESUME_GRACE = "120";  // seconds the server may keep our dialog through a drop (PROTOCOL.md §7.1)
  var RESUME_RETRY_MS = 2000;  // after a refusal that says "not now", the /resume is tried again
  var RETRY_LATER = { unavailable: true, rate_limited: true };
  var REASONS = {
    stop: "left the chat",
    disconnect: "was disconnected",
    timeout: "timed out",
    admin: "was removed by a moderator",
  };

  var $ = function (id) { return document.getElementById(id); };
  var el = {
    status: $("status"), error: $("error"), notice: $("notice"),
    form: $("start-form"), start: $("start"), name: $("name"), language: $("language"),
    gender: $("gender"), age: $("age"), wantGender: $("want-gender"),
    wantAgeMin: $("want-age-min"), wantAgeMax: $("want-age-max"),
    waiting: $("waiting"), cancel: $("cancel"),
    dialog: $("dialog"), partnerLabel: $("partner-label"), partnerName: $("partner-name"), partnerInfo: $("partner-info"),
    log: $("log"), sendForm: $("send-form"), message: $("message"), send: $("send"),
    stop: $("stop"), next: $("next"), back: $("back"),
    reportForm: $("report-form"), reportReason: $("report-reason"), report: $("report"),
  };

  // idle (the form) -> waiting -> chatting -> ended (log kept) -> waiting ...
  // chatting -> reconnecting (the socket dropped; the server holds the dialog) -> chatting
  var state = "idle";
  var chat = null;          // {chatUUID, senderUUID} of the current dialog
  var resumeToken = null;   // from the latest 10: takes the dialog over after a drop
  var lastRequest = null;   // the latest /start body, reused by Next
  var restartAfterStop = false;
  var reported = false;     // this dialog was reported (once per dialog)

  function setState(next) {
    state = next;
    document.body.dataset.state = next;
    el.form.hidden = next !== "idle";
    el.waiting.hidden = next !== "waiting";
    el.dialog.hidden = next !== "chatting" && next !== "reconnecting" && next !== "ended";
    var chatting = next === "chatting", reconnecting = next === "reconnecting";
    el.message.disabled = !chatting;
    el.send.disabled = !chatting;
    el.stop.hidden = !chatting && !reconnecting;
    el.stop.disabled = el.next.disabled = el.report.disabled = reconnecting;
    el.back.hidden = next !== "ended";
    el.reportForm.hidden = reported || (!chatting && !reconnecting && next !== "ended");
    el.partnerLabel.textContent = next === "ended" ? "You talked to" : "Talking to";
    if (chatting) el.message.focus();
  }

  function show(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  function showError(text) { show(el.error, text); }
  function showNotice(text) { show(el.notice, text); }

  function setOnline(online, text) {
    el.status.dataset.online = String(online);
    el.status.textContent = text;
    el.start.disabled = !online;
  }

  function logLine(kind, text) {
    var item = document.createElement("li");
    item.className = kind;
    item.textContent = text;
    el.log.appendChild(item);
    el.log.scrollTop = el.log.scrollHeight;
  }

  // The form -> the /start body of PROTOCOL.md §5 (an empty field is null).
  function intOrNull(input) {
    var value = input.value.trim();
    return value === "" ? null : parseInt(value, 10);
  }

  function startRequest() {
    var min = intOrNull(el.wantAgeMin), max = intOrNull(el.wantAgeMax);
    var body = {
      languageCode: el.language.value.trim().toLowerCase(),
      userAttributes: { gender: el.gender.value || null, age: intOrNull(el.age) },
      targetAttributes: {
        gender: el.wantGender.value || null,
        age: min === null && max === null ? null : { min: min, max: max },
      },
    };
    var name = el.name.value.trim();
    if (name) body.name = name;
    return body;
  }

  function describe(attrs) {
    var parts = [];
    if (attrs && attrs.gender) parts.push(attrs.gender);
    if (attrs && attrs.age !== null && attrs.age !== undefined) parts.push(String(attrs.age));
    return parts.join(", ");
  }

  // STOMP
  var client = new StompJs.Client({
    brokerURL: (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/connect",
    connectHeaders: { "resume-grace": RESUME_GRACE },
    reconnectDelay: 1000,  // a dropped dialog is resumed as soon as the network is back
  });

  client.onConnect = function () {
    setOnline(true, "online");
    client.subscribe("/user/dialog", function (frame) {
      var event;
      try { event = JSON.parse(frame.body); } catch (e) { return; }
      onEvent(event);
    });
    // Subscribed first: the 10 and the events missed meanwhile come right after /resume.
    if (state === "reconnecting") publish("/resume", { resumeToken: resumeToken });
  };

  client.onWebSocketClose = function () {
    setOnline(false, "reconnecting…");
    restartAfterStop = false;
    if ((state === "chatting" || state === "reconnecting") && resumeToken) {
      // The server keeps the dialog for the grace; the next connection takes it over.
      showNotice("Connection lost: reconnecting…");
      setState("reconnecting");
      return;
    }
    var wasBusy = state === "waiting" || state === "chatting";
    if (wasBusy) {
      // The server ends the dialog (or the waiting) of a closed connection.
      if (state === "chatting") logLine("system", "Connection lost; the chat has ended.");
      setState(state === "chatting" ? "ended" : "idle");
    }
  };

  client.onStompError = function (frame) {
    showError("Server error: " + (frame.headers.message || "unknown"));
  };

  function publish(destination, body) {
    if (!client.connected) {
      showError("Not connected to the server yet.");
      return false;
    }
    client.publish({ destination: destination, body: JSON.stringify(body) });
    return true;
  }

  function start(request) {
    showError("");
    showNotice("");
    lastRequest = request;
    if (publish("/start", request)) setState("waiting");
  }

  function stop() {
    if (state === "waiting") publish("/stop", {});
    else if (state === "chatting" && chat)
      publish("/stop", { chatUUID: chat.chatUUID, senderUUID: chat.senderUUID, content: null });
  }

  function onEvent(event) {
    var service = event.serviceContent || {};
    switch (event.eventCode) {
      case PAIRED: {
        resumeToken = service.resumeToken || null;
        if (service.resumed) {  // the same dialog, taken over by this connection
          showNotice("");
          setState("chatting");
          logLine("system", "Reconnected.");
          break;
        }
        var partner = service.partner || {};
        chat = { chatUUID: event.chatUUID, senderUUID: event.senderUUID };
        reported = false;
        el.reportReason.value = "";
        el.log.textContent = "";
        el.partnerName.textContent = partner.name || "Anonymous";
        el.partnerInfo.textContent = describe(partner.userAttributes);
        showError("");
        showNotice("");
        setState("chatting");
        logLine("system", "You are now talking to " + (partner.name || "Anonymous") + ". Say hi!");
        break;
      }
      case MESSAGE:
        if (!chat || event.chatUUID !== chat.chatUUID) return;
        logLine(event.senderUUID === chat.senderUUID ? "me" : "partner", event.content);
        break;
      case LEFT:
        if (event.chatUUID === null) {  // waiting cancelled
          if (restartAfterStop) { restartAfterStop = false; start(lastRequest); return; }
          setState("idle");
          return;
        }
        if (!chat || event.chatUUID !== chat.chatUUID) return;
        resumeToken = null;
        if (event.senderUUID === chat.senderUUID) logLine("system", "You left the chat.");
        else logLine("system", el.partnerName.textContent + " " + (REASONS[service.reason] || "left") + ".");
        setState("ended");
        if (restartAfterStop) { restartAfterStop = false; start(lastRequest); }
        break;
      case START_REFUSED:
        if (state === "reconnecting" && RETRY_LATER[service.error]) {  // the dialog may still be there
          setTimeout(function () {
            if (state === "reconnecting" && client.connected) publish("/resume", { resumeToken: resumeToken });
          }, RESUME_RETRY_MS);
          break;
        }
        if (state === "reconnecting") {  // the /resume: the dialog ended while we were away
          resumeToken = null;
          showNotice("");
          showError(service.error === "resume_failed"
            ? "The connection was lost for too long: the chat has ended. Start a new one."
            : "The chat could not be resumed (" + (service.detail || "refused") + "). Start a new one.");
          setState("idle");
          break;
        }
        showError(service.detail || "Could not start.");
        restartAfterStop = false;
        if (state === "waiting") setState("idle");
        break;
      case STOP_REFUSED:
        // Both left at once: the partner's 30 came first and this dialog is over anyway.
        if (service.error === "dialog_ended" && state !== "chatting") return;
        showError(service.detail || "Refused.");
        break;
      case MESSAGE_REFUSED:
      case REPORT_REFUSED:
        showError(service.detail || "Refused.");
        break;
      case REPORTED:
        reported = true;
        el.reportForm.hidden = true;
        showNotice("Thank you: a moderator will read this dialog.");
        break;
    }
  }

  // UI
  el.form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (!el.form.checkValidity()) {
      el.form.reportValidity();
      return;
    }
    start(startRequest());
  });

  el.sendForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = el.message.value;
    if (state !== "chatting" || !chat || text.trim() === "") return;
    showError("");
    if (publish("/message", { chatUUID: chat.chatUUID, senderUUID: chat.senderUUID, content: text }))
      el.message.value = "";
  });

  // Report: the dialog, current or just ended; the server ends a current one.
  el.reportForm.addEventListener("submit", function (e) {
    e.preventDefault();
    if (!chat || reported) return;
    var reason = el.reportReason.value.trim();
    showError("");
    publish("/report", { chatUUID: chat.chatUUID, senderUUID: chat.senderUUID, content: reason || null });
  });

  el.cancel.addEventListener("click", stop);
  el.stop.addEventListener("click", stop);
  el.next.addEventListener("click", function () {
    if (state === "chatting") { restartAfterStop = true; stop(); }
    else if (state === "ended") start(lastRequest || startRequest());
  });
  el.back.addEventListener("click", function () { setState("idle"); });

  setState("idle");
  client.activate();
})();
