// The 2AFC experiment (paper Sec. 4, Supp. S2.4): consent, instructions, the trials, a completion code.
// The server holds the plan (fixed at consent) and every answer: each trial's answer is stored before the
// next trial starts, so a reload resumes at the first unanswered trial.
"use strict";

const STORAGE_KEY = "emoeditor-study-session";
const KEYS = { f: "left", arrowleft: "left", j: "right", arrowright: "right" };
const EMOTION_WORDS = [
  ["amusement", "finding something funny or entertaining"],
  ["awe", "wonder at something vast, grand or beautiful"],
  ["contentment", "calm, peaceful satisfaction"],
  ["excitement", "eager, energetic enthusiasm"],
  ["anger", "feeling annoyed, provoked or wronged"],
  ["disgust", "revulsion at something unpleasant or repellent"],
  ["fear", "feeling scared, threatened or in danger"],
  ["sadness", "feeling down, sorrowful or hopeless"],
];

const params = new URLSearchParams(window.location.search);
const state = {
  participantId: params.get("PROLIFIC_PID") || params.get("workerId") || params.get("participant")
    || params.get("token"),
  session: null, // the server's view: trials, next_index, n_trials, completion_code
  index: 0, // the trial on screen
  device: "mouse",
  keyListener: null,
};
const jsPsych = initJsPsych();

class Refusal extends Error {}

function escapeHtml(text) {
  const div = document.createElement("div");
  div.textContent = String(text);
  return div.innerHTML;
}

function banner(text) {
  let el = document.getElementById("study-banner");
  if (!text) { if (el) el.remove(); return; }
  if (!el) {
    el = document.createElement("div");
    el.id = "study-banner";
    el.className = "study-banner";
    document.body.appendChild(el);
  }
  el.textContent = text;
}

// A JSON request; network errors and 5xx are retried until they succeed (answers are idempotent on the server),
// a 4xx is the server's final word and raises Refusal with its message.
async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    try {
      const response = await fetch(path, {
        method,
        headers: body ? { "Content-Type": "application/json" } : {},
        body: body ? JSON.stringify(body) : undefined,
      });
      const data = await response.json().catch(() => ({}));
      if (response.ok) { banner(null); return data; }
      if (response.status < 500) {
        const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
        const error = new Refusal(detail || `HTTP ${response.status}`);
        error.status = response.status;
        throw error;
      }
    } catch (error) {
      if (error instanceof Refusal) throw error;
    }
    banner("Connection problem: your answers are safe, retrying...");
    await new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** attempt, 5000)));
  }
}

function remember() {
  localStorage.setItem(STORAGE_KEY, JSON.stringify({
    participant_id: state.session.participant_id, session_id: state.session.session_id,
  }));
}

function stop(message) {
  jsPsych.abortExperiment(`<div class="study-text"><p>${escapeHtml(message)}</p></div>`);
}

function pageText(html) {
  return `<div class="study-text">${html}</div>`;
}

const consentTrial = {
  type: jsPsychHtmlButtonResponse,
  stimulus: pageText(`<h2>Consent to take part</h2>
    <p>This study is about how images make people feel. You will see pairs of images and choose, for each pair,
    the image that evokes a given emotion more strongly in you. It takes about 10 to 15 minutes.</p>
    <p>Some images may show unpleasant scenes (for example, images meant to evoke fear, disgust or sadness).
    You may stop at any time by closing this page.</p>
    <p>We record your participant id, your choices and your response times, nothing else. The data are stored
    without your name and are used for research only.</p>
    <p>By clicking "I agree" you confirm that you are at least 18 years old and agree to take part.</p>`),
  choices: ["I agree", "I do not agree"],
  data: { phase: "consent" },
  on_finish(data) {
    if (data.response !== 0) stop("You did not consent, so the study ends here. Thank you for your time.");
  },
};

const idTrial = {
  timeline: [{
    type: jsPsychSurveyText,
    questions: [{ prompt: "Please enter your participant id (e.g. your Prolific id):", name: "participant_id",
      required: true }],
    on_finish(data) { state.participantId = String(data.response.participant_id).trim(); },
  }],
  conditional_function: () => !state.participantId,
};

const startTrial = {
  type: jsPsychCallFunction,
  async: true,
  func(done) {
    api("POST", "/api/consent", { participant_id: state.participantId, consent: true })
      .then((session) => { state.session = session; state.index = session.next_index; remember(); done(); })
      .catch((error) => {
        stop(error.status === 422 ? "This participant id is not valid (use letters, digits and _ . @ : - only); "
          + "please open the study link from your study platform again." : error.message);
        done();
      });
  },
};

function instructionPages() {
  const n = state.session.n_trials;
  const words = EMOTION_WORDS.map(([w, d]) => `<li><b>${w}</b>: ${d}</li>`).join("");
  return [
    pageText(`<h2>Instructions (1/4)</h2><p>In each of the ${n} trials you will see an emotion word and two
      images. Look at both images and choose the one that makes <i>you</i> feel that emotion more strongly.</p>
      <p>There is no time limit, but please answer with your first impression.</p>`),
    pageText(`<h2>Instructions (2/4)</h2><p>The emotion words are:</p><ul>${words}</ul>`),
    pageText(`<h2>Instructions (3/4)</h2><p>To answer, click the image you choose, or press
      <span class="study-key">F</span> for the left image and <span class="study-key">J</span> for the right one.
      Answers cannot be changed.</p>`),
    pageText(`<h2>Instructions (4/4)</h2><p>A few trials check attention: in them one image clearly fits the
      emotion better. Please stay focused throughout.</p><p>If your connection drops or you reload the page, you
      continue where you left off. At the end you get a completion code.</p><p>Click "Next" to start.</p>`),
  ];
}

const instructions = {
  timeline: [{ type: jsPsychInstructions, pages: instructionPages, show_clickable_nav: true,
    data: { phase: "instructions" } }],
  conditional_function: () => state.session !== null && state.session.next_index === 0,
};

const welcomeBack = {
  timeline: [{
    type: jsPsychHtmlButtonResponse,
    stimulus: () => pageText(`<h2>Welcome back</h2><p>You continue at trial ${state.index + 1} of
      ${state.session.n_trials}. Click the image that evokes the emotion more strongly, or press
      <span class="study-key">F</span> (left) / <span class="study-key">J</span> (right).</p>`),
    choices: ["Continue"],
  }],
  conditional_function: () => state.session !== null && state.session.next_index > 0
    && state.index < state.session.n_trials,
};

function current() { return state.session.trials[state.index]; }

// Both images decoded before the trial starts, so the response time counts from a complete display.
const preload = {
  type: jsPsychCallFunction,
  async: true,
  func(done) {
    const t = current();
    Promise.all([t.left, t.right].map((src) => { const img = new Image(); img.src = src; return img.decode(); }))
      .then(() => done(), () => done());
  },
};

const choiceTrial = {
  type: jsPsychHtmlButtonResponse,
  stimulus: () => `<p class="study-question">Which image makes you feel more <b>${escapeHtml(current().target)}</b>?</p>`,
  choices: ["left", "right"],
  button_html: (choice) => `<button class="jspsych-btn study-choice" id="study-${choice}" aria-label="${choice} image">`
    + `<img src="${current()[choice]}" alt="${choice} image"></button>`,
  button_layout: "flex",
  prompt: () => `<p class="study-progress">Click an image or press <span class="study-key">F</span> /
    <span class="study-key">J</span> &middot; trial ${state.index + 1} of ${state.session.n_trials}</p>`,
  data: { phase: "trial" },
  on_load() {
    state.device = "mouse";
    state.keyListener = jsPsych.pluginAPI.getKeyboardResponse({
      callback_function(info) {
        state.device = "keyboard";
        document.getElementById(`study-${KEYS[info.key.toLowerCase()]}`).click();
      },
      valid_responses: Object.keys(KEYS),
      persist: false,
      allow_held_key: false,
    });
  },
  async on_finish(data) {
    jsPsych.pluginAPI.cancelKeyboardResponse(state.keyListener);
    const answer = { trial_index: current().trial_index, choice: data.response === 0 ? "left" : "right",
      rt_ms: data.rt, device: state.device };
    Object.assign(data, answer);
    try {
      const stored = await api("POST", `/api/session/${state.session.session_id}/response`, answer);
      state.session.completion_code = stored.completion_code;
      state.index = stored.next_index;
    } catch (error) {
      if (error.status !== 409) { stop(error.message); return; }
      // answered elsewhere (another tab): continue from the server's next trial
      const session = await api("GET", `/api/session/${state.session.session_id}`);
      state.session = session;
      state.index = session.next_index;
    }
  },
};

const trials = {
  timeline: [preload, choiceTrial],
  conditional_function: () => state.session !== null && state.index < state.session.n_trials,
  loop_function: () => state.index < state.session.n_trials,
};

const finish = {
  type: jsPsychHtmlKeyboardResponse,
  stimulus: () => pageText(`<h2>Thank you!</h2><p>You have completed the study. Your completion code is:</p>
    <p class="study-code" id="completion-code">${escapeHtml(state.session.completion_code)}</p>
    <p>Please copy it into the study platform now; you can close this page afterwards.</p>`),
  choices: "NO_KEYS",
};

// A stored session of this browser for the same participant resumes without a second consent.
async function storedSession() {
  let stored;
  try { stored = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null"); } catch { stored = null; }
  if (!stored || (state.participantId && state.participantId !== stored.participant_id)) return null;
  try {
    return await api("GET", `/api/session/${stored.session_id}`);
  } catch (error) {
    localStorage.removeItem(STORAGE_KEY);
    return null;
  }
}

async function main() {
  const session = await storedSession();
  let timeline;
  if (session) {
    state.session = session;
    state.participantId = session.participant_id;
    state.index = session.next_index;
    timeline = [welcomeBack, trials, finish];
  } else {
    timeline = [consentTrial, idTrial, startTrial, instructions, trials, finish];
  }
  await jsPsych.run(timeline);
}

main();
