// The redtail admin page. Everything shown is set as text (never as HTML): job data, errors,
// logs and user agents are whatever users and handlers put there.
'use strict';

const base = document.body.dataset.base;
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
let queueNames = [];

function el(tag, attrs, ...children) {
  const node = document.createElementNS(['svg', 'rect', 'title'].includes(tag) ? 'http://www.w3.org/2000/svg' : 'http://www.w3.org/1999/xhtml', tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ''));
  return node;
}

async function api(method, path) {
  const response = await fetch(`${base}/api${path}`, { method, credentials: 'same-origin' });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${method} ${path}: ${response.status}`);
  return body;
}

function say(text) { $('status').textContent = text; }

async function attempt(action) {
  try { await action(); say(''); } catch (e) { say(e.message); }
}

const time = (ms) => (ms ? new Date(ms).toLocaleString() : '');

// Completed (green) and failed (red) attempts per minute over the last hour, oldest on the left.
function chart(minutes) {
  const ordered = [...minutes].reverse();
  const top = Math.max(1, ...ordered.map((m) => m.completed + m.failed));
  const width = 600, height = 90, slot = width / 60;
  const svg = el('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img' });
  ordered.forEach((m, i) => {
    const x = (60 - ordered.length + i) * slot;
    const done = (m.completed / top) * height, failed = (m.failed / top) * height;
    svg.append(el('rect', { class: 'completed', x, y: height - done, width: slot - 1, height: done, 'data-minute': m.start_ms, 'data-completed': m.completed }));
    svg.append(el('rect', { class: 'failed', x, y: height - done - failed, width: slot - 1, height: failed, 'data-minute': m.start_ms, 'data-failed': m.failed }));
  });
  svg.append(el('title', {}, `last hour: ${minutes.reduce((n, m) => n + m.completed, 0)} completed, ${minutes.reduce((n, m) => n + m.failed, 0)} failed attempts`));
  return svg;
}

function queueCard(queue) {
  const { counts, paused, minutes } = queue.metrics;
  const toggle = el('button', {
    'data-action': paused ? 'resume' : 'pause', 'data-queue': queue.name,
    onclick: () => attempt(async () => { await api('POST', `/queues/${enc(queue.name)}/${paused ? 'resume' : 'pause'}`); await refresh(); }),
  }, paused ? 'Resume' : 'Pause');
  const numbers = el('div', { class: 'counts' });
  for (const state of ['waiting', 'waiting_children', 'active', 'delayed', 'completed', 'dead']) {
    numbers.append(el('span', { 'data-count': state }, el('b', {}, counts[state]), state));
  }
  const groups = queue.metrics.groups;
  const extra = el('p', { class: 'note' }, el('span', { 'data-deduplicated': queue.deduplicated_last_hour },
    `${queue.deduplicated_last_hour} adds deduplicated in the last hour`),
    groups.waiting + groups.running + groups.paused ? el('span', { 'data-groups': groups.waiting },
      ` · groups: ${groups.waiting} with jobs waiting, ${groups.running} running, ${groups.paused} paused`) : '');
  const schedulers = el('table', { class: 'schedulers' });
  for (const s of queue.schedulers) {
    const r = s.definition.repeat;
    const when = r.cron ? `cron ${r.cron.pattern} (${r.cron.time_zone})` : `every ${r.every.ms / 1000} s`;
    schedulers.append(el('tr', { 'data-scheduler': s.id },
      el('td', {}, s.id), el('td', {}, when), el('td', {}, s.next_ms ? `next ${time(s.next_ms)}` : 'ended'),
      el('td', {}, `${s.runs} runs`), el('td', {}, s.last_job || '')));
  }
  return el('div', { class: 'queue', 'data-queue': queue.name, 'data-paused': paused },
    el('h2', {}, queue.name, ' ', paused ? el('span', { class: 'paused' }, 'paused') : ''), numbers, chart(minutes),
    extra, queue.schedulers.length ? schedulers : '', toggle);
}

function jobRow(queue, job) {
  const buttons = el('td');
  const action = (label, method, path) => buttons.append(el('button', {
    'data-action': label.toLowerCase(), 'data-id': job.id,
    onclick: () => attempt(async () => { await api(method, `/queues/${enc(queue)}/jobs/${enc(job.id)}${path}`); await refresh(); }),
  }, label));
  buttons.append(el('button', { 'data-action': 'view', 'data-id': job.id, onclick: () => attempt(() => showJob(queue, job.id)) }, 'View'));
  if (job.state === 'dead') action('Retry', 'POST', '/retry');
  if (job.state === 'delayed') action('Promote', 'POST', '/promote');
  if (job.state !== 'active') action('Delete', 'DELETE', '');
  const last = job.errors.length ? job.errors[job.errors.length - 1][1] : '';
  return el('tr', { 'data-job': job.id, 'data-state': job.state },
    el('td', {}, job.id), el('td', {}, job.state), el('td', {}, `${job.attempts_started} of ${job.max_attempts}`),
    el('td', {}, time(job.created_ms)), el('td', { class: 'error' }, last), buttons);
}

async function showJob(queue, id) {
  const { job, log } = await api('GET', `/queues/${enc(queue)}/jobs/${enc(id)}`);
  const detail = $('job-detail');
  const errors = el('ol', {});
  for (const [n, message] of job.errors) errors.append(el('li', { value: n, 'data-attempt': n }, message));
  detail.replaceChildren(
    el('h2', {}, `${queue} / ${job.id}: ${job.state}`),
    el('p', {}, `attempt ${job.attempts_started} of ${job.max_attempts}, priority ${job.priority}, created ${time(job.created_ms)}`),
    el('h3', {}, 'Data'), el('pre', { id: 'job-data' }, JSON.stringify(job.data, null, 2)),
    el('h3', {}, 'Progress'), el('pre', {}, JSON.stringify(job.progress)),
    el('h3', {}, 'Result'), el('pre', {}, JSON.stringify(job.result, null, 2)),
    el('h3', {}, 'Errors by attempt'), errors,
    el('h3', {}, 'Log'), el('pre', { id: 'job-log' }, log.join('\n')));
  detail.hidden = false;
}

async function listJobs() {
  const queue = $('job-queue').value;
  if (!queue) return;
  const search = $('job-search').value.trim();
  let jobs;
  if (search) {
    try { jobs = [(await api('GET', `/queues/${enc(queue)}/jobs/${enc(search)}`)).job]; } catch { jobs = []; }
  } else {
    jobs = (await api('GET', `/queues/${enc(queue)}/jobs?state=${enc($('job-state').value)}&count=50`)).jobs;
  }
  $('job-list').replaceChildren(...jobs.map((job) => jobRow(queue, job)));
}

// A queue's groups with jobs (the first 100 by name), or the one typed, each pausable.
async function listGroups() {
  const queue = $('job-queue').value;
  if (!queue) return;
  const name = $('group-name').value.trim();
  const groups = name
    ? [(await api('GET', `/queues/${enc(queue)}/groups/${enc(name)}`)).group]
    : (await api('GET', `/queues/${enc(queue)}/groups?count=100`)).groups;
  $('group-list').replaceChildren(...groups.map((g) => el('tr', { 'data-group': g.name },
    el('td', {}, g.name), el('td', {}, g.waiting), el('td', {}, g.active), el('td', {}, g.paused ? 'paused' : ''),
    el('td', {}, el('button', {
      'data-action': g.paused ? 'resume-group' : 'pause-group', 'data-id': g.name,
      onclick: () => attempt(async () => {
        await api('POST', `/queues/${enc(queue)}/groups/${enc(g.name)}/${g.paused ? 'resume' : 'pause'}`);
        await listGroups();
      }),
    }, g.paused ? 'Resume' : 'Pause')))));
}

async function showLimits() {
  const subject = $('limit-subject').value.trim();
  if (!subject) return;
  const { policies } = await api('GET', `/limits/${enc(subject)}`);
  $('limit-list').replaceChildren(...policies.map((p) => el('tr', { 'data-policy': p.policy },
    el('td', {}, p.policy), el('td', {}, `${p.remaining} of ${p.limit} left per ${p.period_secs} s`),
    el('td', {}, `full again in ${Math.ceil(p.reset_after_secs)} s`))));
}

async function showSessions() {
  const user = $('session-user').value.trim();
  if (!user) return;
  const { sessions } = await api('GET', `/sessions/${enc(user)}`);
  $('session-list').replaceChildren(...sessions.map((s) => el('tr', { 'data-session': s.id },
    el('td', {}, s.id, s.remember_me ? ' (remember me)' : ''), el('td', {}, time(s.created_ms)), el('td', {}, time(s.expires_ms)),
    el('td', {}, [s.ip, s.user_agent].filter(Boolean).join(', ')),
    el('td', {}, el('button', {
      'data-action': 'end', 'data-id': s.id,
      onclick: () => attempt(async () => { await api('DELETE', `/sessions/${enc(user)}/${enc(s.id)}`); await showSessions(); }),
    }, 'End')))));
}

async function refresh() {
  const overview = await api('GET', '/overview');
  const health = overview.health;
  $('health').textContent = health === null ? 'not configured' : health.up ? 'up' : 'down';
  $('queues').replaceChildren(...overview.queues.map(queueCard));
  const names = overview.queues.map((q) => q.name);
  if (names.join('\n') !== queueNames.join('\n')) {
    queueNames = names;
    $('job-queue').replaceChildren(...names.map((n) => el('option', {}, n)));
  }
  $('limits').hidden = !overview.limits;
  $('sessions').hidden = !overview.sessions;
  await listJobs();
}

function submit(id, action) {
  $(id).addEventListener('submit', (event) => { event.preventDefault(); attempt(action); });
}

submit('job-filter', listJobs);
submit('group-form', listGroups);
submit('limit-form', showLimits);
submit('session-form', showSessions);
$('job-state').addEventListener('change', () => attempt(listJobs));
$('job-queue').addEventListener('change', () => attempt(listJobs));
attempt(refresh);
setInterval(() => attempt(refresh), 2000);
