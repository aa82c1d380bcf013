// Vercel AI SDK client harness: one chat completion against an
// OpenAI-compatible endpoint, result printed as ONE JSON line on stdout.
//
// Env:
//   BASE_URL         e.g. http://127.0.0.1:8000/v1 (the SDK appends /chat/completions)
//   API_KEY          sent as "Authorization: Bearer <API_KEY>"
//   MODEL            model id put in the request body
//   PROMPT           the user message
//   SESSION_ID       optional, sent as header X-Session-Id
//   IDEMPOTENCY_KEY  optional, sent as header Idempotency-Key
//   MODE             "stream" (default, streamText) or "generate" (generateText)
//   MAX_RETRIES      optional, default 0: the SDK's own retries (its default is 2)
//                    would hide the first status behind a RetryError
//
// Success: {"text", "usage", "finishReason", "chunks"}   exit 0
// Failure: {"error", "status", "body", "text", "chunks"}   exit 1
//          (status/body are null when there was no HTTP error response,
//          e.g. connection refused or an error event inside the stream;
//          text/chunks are what had streamed before the failure)
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { generateText, streamText } from 'ai';

function env(name, { required = true } = {}) {
  const value = process.env[name];
  if (required && (value === undefined || value === '')) {
    throw new Error(`missing env ${name}`);
  }
  return value === '' ? undefined : value;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// What a stream-mode run had received before it failed.
const partial = { text: '', chunks: 0 };

function describe(err) {
  if (err instanceof Error) return String(err);
  // An in-stream `data: {"error": {...}}` event reaches us as that plain object.
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

function fail(err) {
  // A RetryError (MAX_RETRIES > 0) wraps the last APICallError.
  const apiErr = err && err.lastError ? err.lastError : err;
  emit({
    error: describe(err),
    status: apiErr?.statusCode ?? null,
    body: apiErr?.responseBody ?? null,
    // extra, beyond the contract: text streamed before the failure
    text: partial.text,
    chunks: partial.chunks,
  });
  process.exitCode = 1;
}

async function main() {
  const baseURL = env('BASE_URL');
  const apiKey = env('API_KEY');
  const modelId = env('MODEL');
  const prompt = env('PROMPT');
  const mode = env('MODE', { required: false }) ?? 'stream';
  const maxRetries = Number(env('MAX_RETRIES', { required: false }) ?? 0);

  const headers = {};
  const sessionId = env('SESSION_ID', { required: false });
  const idempotencyKey = env('IDEMPOTENCY_KEY', { required: false });
  if (sessionId !== undefined) headers['X-Session-Id'] = sessionId;
  if (idempotencyKey !== undefined) headers['Idempotency-Key'] = idempotencyKey;

  const provider = createOpenAICompatible({
    name: 'assistant',
    baseURL,
    apiKey,
    includeUsage: true,
    headers,
  });
  const model = provider(modelId);

  if (mode === 'generate') {
    const result = await generateText({ model, prompt, maxRetries });
    emit({
      text: result.text,
      usage: result.usage,
      finishReason: result.finishReason,
      chunks: 0,
    });
    return;
  }
  if (mode !== 'stream') throw new Error(`unknown MODE ${mode}`);

  // streamText does not throw: a failed request or a broken stream is handed
  // to onError and the text stream just ends. Keep the error and report it.
  let streamError;
  const result = streamText({
    model,
    prompt,
    maxRetries,
    onError: ({ error }) => {
      streamError ??= error;
    },
  });
  for await (const part of result.textStream) {
    partial.text += part;
    partial.chunks += 1;
  }
  if (streamError !== undefined) throw streamError;
  const [usage, finishReason] = await Promise.all([result.usage, result.finishReason]);
  if (streamError !== undefined) throw streamError;
  emit({ text: partial.text, usage, finishReason, chunks: partial.chunks });
}

main().catch(fail);
