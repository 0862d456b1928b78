"""orchestra_jax.chat — tokenizer, chat template, tool-call parser, turn-by-turn token assembly.

    from orchestra_jax.chat.tokenizer import load_tokenizer          # offline Qwen3 tokenizer
    from orchestra_jax.chat.template import ChatTemplate, render_tokens
    from orchestra_jax.chat.parser import parse_tool_calls, ParsedTurn, ToolSchemas
    from orchestra_jax.chat.assembly import TokenAssembler, ContextLimits
"""
