"""A baseline for BFCL: llama-cpp-python's own tool calling, with no moragent roles.

What a user of llama-cpp-python gets on the same GGUF model: ``Llama(...,
chat_format="chatml-function-calling")`` and ``create_chat_completion(messages, tools,
tool_choice="auto")``. Its handler lets the model choose between a plain message and
calls, each call's arguments held to the tool's JSON Schema by a grammar. A message
with no ``tool_calls`` is "no call"; a call whose arguments are not JSON is an error
(BFCL counts it wrong).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moragent.eval.bfcl import BfclQuestion
from moragent.models import resolve_model
from moragent.trajectory import ToolCall

#: the chat handler of llama-cpp-python that this baseline runs
CHAT_FORMAT = "chatml-function-calling"


class ChatmlFunctionCallingPredictor:
    """Answers BFCL questions with llama-cpp-python's ``chatml-function-calling`` handler.

    Args:
        model: GGUF file; None takes the embedded SmolLM2-135M-Instruct.
        n_ctx: context length in tokens.
        n_threads: CPU threads; None reads ``MORAGENT_THREADS``, else uses every core.
        max_tokens: the longest reply.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        max_tokens: int = 512,
    ) -> None:
        from moragent.backends.llamacpp_safe import load_llama

        self.model_path = resolve_model(model)
        self.llm = load_llama(self.model_path, n_ctx, n_threads, chat_format=CHAT_FORMAT)
        self.max_tokens = max_tokens
        #: the last reply's message, for inspection
        self.last_message: dict[str, Any] = {}

    def __call__(
        self, question: BfclQuestion, tools: list[dict[str, Any]]
    ) -> list[ToolCall] | None:
        messages: list[dict[str, Any]] = []
        if question.system:
            messages.append({"role": "system", "content": question.system})
        messages.append({"role": "user", "content": question.query})
        reply = self.llm.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            tools=[{"type": "function", "function": tool} for tool in tools],  # type: ignore[misc]
            tool_choice="auto",
            temperature=0.0,
            max_tokens=self.max_tokens,
        )
        message = reply["choices"][0]["message"]  # type: ignore[index]
        self.last_message = dict(message)
        tool_calls = message.get("tool_calls") or []
        if not tool_calls:
            return None
        calls = []
        for item in tool_calls:
            function = item["function"]
            try:
                arguments = json.loads(function["arguments"] or "{}")
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{function['name']}: arguments are not JSON ({exc.msg}): "
                    f"{function['arguments'][:200]!r}"
                ) from None
            calls.append(ToolCall(function["name"], arguments))
        return calls
