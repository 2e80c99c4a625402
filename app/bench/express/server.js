// The seed's API (api/server.js of the seed project), rebuilt for `make bench` as the baseline
// halab is measured against. Faithful to what the seed's write-up shows, not improved:
// Express, one process, /api/health with the 512 MB / 80 % RSS rule (503 UNHEALTHY over it),
// GET/POST /api/todos with the field `texto`, /api/stress and /api/stress/clear, pino JSON logs
// with `instance` on every line and pino-http's "request completed" line per request.
//
// The write-up has no code for these; the plain obvious Express + redis way is assumed:
// - storage: each todo is a JSON string in ONE Redis list, key `todos`; POST does LPUSH
//   (newest first), GET does LRANGE todos 0 -1 and returns them all (the seed's list was not
//   bounded: halab added paging), JSON.parse of each;
// - a todo is {id, texto, completada: false, createdAt, instance} (the shape halab kept);
//   id = Date.now() as a string, no validation of `texto` beyond "present" (400 otherwise);
// - the `...` of the health answer: status, instance, rssMB, memoryPercent (the fields its
//   log lines show) plus limitMB; health does not touch Redis (the snippet shows no call);
// - env: INSTANCE (the seed's `instance`), PORT (3000), REDIS_URL (redis://redis:6379, the
//   compose service's name); HOST is the bench's only addition (the seed listened on every
//   address; the bench binds 127.0.0.1); the bench also sets NODE_ENV=production, as a
//   Node container image usually does;
// - Express and the other packages at the versions `npm install` picks today (package.json);
// - the seed's constant is called MEMORY_THRESHOLD_MB in the handler but only
//   MEMORY_THRESHOLD_PERCENT is declared: the obvious MEMORY_LIMIT_MB * PERCENT / 100 here.
'use strict';

const express = require('express');
const pino = require('pino');
const pinoHttp = require('pino-http');
const { createClient } = require('redis');

const INSTANCE = process.env.INSTANCE || '1';
const PORT = Number(process.env.PORT || 3000);
const REDIS_URL = process.env.REDIS_URL || 'redis://redis:6379';

const MEMORY_LIMIT_MB = 512;
const MEMORY_THRESHOLD_PERCENT = 80;
const MEMORY_THRESHOLD_MB = (MEMORY_LIMIT_MB * MEMORY_THRESHOLD_PERCENT) / 100;

const logger = pino({ base: { instance: INSTANCE } });
const redis = createClient({ url: REDIS_URL });
redis.on('error', (err) => logger.error({ err }, 'Redis error'));

const app = express();
app.use(express.json());
app.use(pinoHttp({ logger }));

let memoryHog = [];

app.get('/api/health', async (req, res) => {
  const rssMB = Math.round(process.memoryUsage().rss / 1024 / 1024);
  const memoryPercent = Math.round((rssMB / MEMORY_LIMIT_MB) * 100);
  const isHealthy = rssMB < MEMORY_THRESHOLD_MB;
  const body = { instance: INSTANCE, rssMB, limitMB: MEMORY_LIMIT_MB, memoryPercent };

  if (isHealthy) {
    res.json({ status: 'OK', ...body });
  } else {
    logger.warn({ rssMB, memoryPercent }, 'Health check: memoria alta, marcando como unhealthy');
    res.status(503).json({ status: 'UNHEALTHY', ...body });
  }
});

app.get('/api/todos', async (req, res) => {
  try {
    const items = await redis.lRange('todos', 0, -1);
    res.json(items.map((s) => JSON.parse(s)));
  } catch (err) {
    req.log.error({ err }, 'Error leyendo tareas');
    res.status(500).json({ error: 'Error leyendo tareas' });
  }
});

app.post('/api/todos', async (req, res) => {
  const { texto } = req.body || {};
  if (!texto) {
    return res.status(400).json({ error: 'El campo texto es requerido' });
  }
  const todo = {
    id: Date.now().toString(),
    texto,
    completada: false,
    createdAt: new Date().toISOString(),
    instance: INSTANCE,
  };
  try {
    await redis.lPush('todos', JSON.stringify(todo));
    res.status(201).json(todo);
  } catch (err) {
    req.log.error({ err }, 'Error creando tarea');
    res.status(500).json({ error: 'Error creando tarea' });
  }
});

// POST /api/stress - Asigna ~400MB (80% del límite)
app.post('/api/stress', (req, res) => {
  for (let i = 0; i < 8; i++) {
    memoryHog.push(Buffer.alloc(50 * 1024 * 1024, 'x'));
  }
  res.json({ instance: INSTANCE, chunks: memoryHog.length });
});

// POST /api/stress/clear - Libera memoria
app.post('/api/stress/clear', (req, res) => {
  const freed = memoryHog.length;
  memoryHog = [];
  res.json({ instance: INSTANCE, freed });
});

redis.connect().then(() => {
  app.listen(PORT, process.env.HOST || '0.0.0.0', () => {
    logger.info({ port: PORT }, 'API escuchando');
  });
});
