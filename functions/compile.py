"""`compile`: a task in plain words turned into Python or SQL that is checked to parse (Python with the
standard library's own compiler, SQL with PostgreSQL's parser through pglast), with diagnostics and at
most one repair round. Billed and recorded like a chat turn; the hold covers both model calls."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from functions.billed_call import BilledCall
from functions.http import Context, endpoint
from functions.providers import Message, Usage
from functions.schemas import CompileRequest, CompileResponse

_FENCE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n(.*?)```", re.DOTALL)


def system_prompt(language: str, context: str | None) -> str:
    prompt = (f"You write {language} code. LANGUAGE: {language}. Answer with the code only, in one fenced "
              "code block, no explanation.")
    return f"{prompt}\n\nContext:\n{context}" if context else prompt


def extract_code(answer: str) -> str:
    """The first fenced block of the answer, or the whole answer when it has none."""
    match = _FENCE.search(answer)
    return (match.group(1) if match else answer).strip("\n")


def check(language: str, code: str) -> list[dict[str, Any]]:
    """Diagnostics for code that does not parse; empty when it does. The code is parsed, never run."""
    if not code.strip():
        return [{"line": None, "column": None, "message": "no code in the answer"}]
    if language == "python":
        try:
            compile(code, "<generated>", "exec", dont_inherit=True)  # parse and compile only; nothing runs
        except SyntaxError as exc:
            return [{"line": exc.lineno, "column": exc.offset, "message": exc.msg}]
        except (ValueError, RecursionError, MemoryError) as exc:
            return [{"line": None, "column": None, "message": f"{type(exc).__name__}: {exc}"}]
        return []
    import pglast  # imported on use: only SQL compiles need it

    try:
        pglast.parse_sql(code)
    except pglast.parser.ParseError as exc:
        message, offset = (*exc.args, None, None)[:2]
        line, column = _position(code, offset) if isinstance(offset, int) else (None, None)
        return [{"line": line, "column": column, "message": str(message)}]
    return []


def _position(code: str, offset: int) -> tuple[int, int]:
    before = code.encode()[:offset].decode(errors="ignore")
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


@endpoint("compile", methods=("POST",))
async def handle(ctx: Context) -> Response | Mapping[str, Any]:
    """Turn a task into code that parses."""
    principal = await ctx.authenticate_user()
    body = await ctx.json_body(CompileRequest)
    if body.project_id is not None:
        await ctx.db.rpc("check_project", {"project_id": body.project_id, "user_id": principal.user_id},
                         principal.caller)
    max_tokens = body.max_tokens or ctx.settings.default_max_tokens
    messages: list[Message] = [{"role": "system", "content": system_prompt(body.language, body.context)},
                               {"role": "user", "content": body.task}]
    prompt_chars = sum(len(m["content"]) for m in messages)
    call = BilledCall(ctx.db, ctx.settings, principal.user_id, ctx.request_id, "compile", ctx.log_fields)
    # Worst case of two calls: the repair call re-sends the prompt and the first answer (<= 4 chars a token).
    hold = await call.begin("begin_charge", {
        "model": body.model or ctx.settings.default_model, "provider": ctx.settings.model_provider,
        "prompt_chars": 2 * prompt_chars + 4 * max_tokens + 200, "max_output_tokens": 2 * max_tokens, "calls": 2})
    if (stored := hold.settled_result) is not None:
        return CompileResponse.from_result(stored, provider=hold.provider, replay=True).model_dump(mode="json")
    provider = await call.provider(hold)

    async def generate() -> tuple[str, list[dict[str, Any]], bool, Usage]:
        first = await provider.complete(hold.model, messages, max_tokens)
        code, problems = extract_code(first.text), check(body.language, extract_code(first.text))
        if not problems:
            return code, problems, False, first.usage
        retry: list[Message] = [*messages, {"role": "assistant", "content": first.text},
                                {"role": "user", "content": _repair_prompt(problems)}]
        second = await provider.complete(hold.model, retry, max_tokens)
        code, problems = extract_code(second.text), check(body.language, extract_code(second.text))
        return code, problems, True, first.usage + second.usage

    code, problems, repaired, usage = await call.run(hold, generate)
    result = await call.settle(hold, "settle_compile", {
        "task": body.task, "language": body.language, "code": code, "valid": not problems,
        "diagnostics": problems, **usage.as_args(), "project_id": body.project_id, "repaired": repaired})
    return CompileResponse.from_result(result, provider=hold.provider,
                                       replay=bool(result.get("replay"))).model_dump(mode="json")


def _repair_prompt(problems: list[dict[str, Any]]) -> str:
    listed = "\n".join(f"- line {p['line']}, column {p['column']}: {p['message']}" for p in problems)
    return f"That code does not parse:\n{listed}\nAnswer with the corrected code only, in one fenced block."

