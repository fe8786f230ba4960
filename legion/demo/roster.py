"""Enterprise Legion's cast: 18 agents in 6 departments, their work, models and tools.

Numbers are plausible rather than measured: LLM latency grows with output tokens (a fixed
time-to-first-token plus a per-token decode time), tools have their own lognormal latencies and
failure rates, and prices are USD per 1k tokens in the range public APIs charge.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Model:
    """An LLM: USD per 1k input/output tokens, time to first token, decode seconds per token."""

    name: str
    usd_in_1k: float
    usd_out_1k: float
    ttft_secs: float
    secs_per_token: float


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool an agent calls: median latency (s), lognormal sigma, failure probability."""

    name: str
    median_secs: float
    sigma: float
    fail_rate: float


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent: identity, work mix, model, tools, load and who it delegates to."""

    agent_id: str
    department: str
    role: str
    task_types: tuple[str, ...]
    model: str
    tools: tuple[str, ...]
    rate_per_sec: float  # tasks arriving from outside the legion
    input_tokens: int  # median prompt size
    output_tokens: int  # median completion size
    delegates_to: tuple[str, ...]
    base_cpu_percent: float  # modeled share of the host while idle (agents are not processes here)
    base_memory_mb: float  # modeled resident size of the agent


MODELS: dict[str, Model] = {m.name: m for m in (
    Model("claude-sonnet-4", 0.003, 0.015, 0.45, 0.006),
    Model("gpt-4o", 0.0025, 0.010, 0.40, 0.005),
    Model("gpt-4o-mini", 0.00015, 0.0006, 0.25, 0.003),
    Model("llama-3.1-70b", 0.0009, 0.0009, 0.30, 0.004),
)}

TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("web_search", 0.60, 0.5, 0.04),
    Tool("http_fetch", 0.35, 0.7, 0.06),
    Tool("sql_query", 0.12, 0.6, 0.015),
    Tool("python_exec", 0.50, 0.8, 0.03),
    Tool("vector_search", 0.05, 0.4, 0.005),
    Tool("repo_search", 0.15, 0.5, 0.01),
    Tool("code_exec", 1.20, 0.7, 0.05),
    Tool("git", 0.20, 0.4, 0.01),
    Tool("test_runner", 2.00, 0.6, 0.08),
    Tool("kubectl", 0.40, 0.5, 0.03),
    Tool("terraform", 1.50, 0.6, 0.05),
    Tool("log_search", 0.30, 0.6, 0.02),
    Tool("pager_api", 0.15, 0.4, 0.01),
    Tool("queue_api", 0.03, 0.3, 0.005),
    Tool("crm_lookup", 0.20, 0.5, 0.02),
    Tool("email_send", 0.25, 0.4, 0.01),
    Tool("kb_search", 0.08, 0.5, 0.01),
    Tool("ticket_api", 0.18, 0.5, 0.015),
    Tool("ledger_api", 0.22, 0.5, 0.01),
    Tool("policy_db", 0.10, 0.4, 0.005),
    Tool("doc_parse", 0.70, 0.6, 0.03),
)}

DEPARTMENTS = ("executive", "research", "engineering", "operations", "sales_support",
               "finance_compliance")


def _a(agent_id: str, dept: str, role: str, tasks: str, model: str, tools: str, rate: float,
       tin: int, tout: int, to: str, cpu: float, mem: float) -> AgentSpec:
    return AgentSpec(agent_id, dept, role, tuple(tasks.split()), model, tuple(tools.split()),
                     rate, tin, tout, tuple(to.split()), cpu, mem)


AGENTS: tuple[AgentSpec, ...] = (
    _a("ceo-orchestrator", "executive", "Decomposes goals and routes work to departments",
       "plan route review", "claude-sonnet-4", "kb_search", 1.2, 3000, 250,
       "strategy-planner market-researcher code-architect devops-engineer sales-assistant "
       "finance-analyst", 6.0, 420),
    _a("strategy-planner", "executive", "Turns goals into quarterly plans and OKRs",
       "plan forecast", "claude-sonnet-4", "kb_search sql_query", 0.6, 5000, 350,
       "data-analyst finance-analyst", 4.0, 380),
    _a("chief-of-staff", "executive", "Schedules, follows up and writes status reports",
       "schedule report", "gpt-4o-mini", "email_send kb_search", 1.0, 1500, 300,
       "workflow-scheduler", 3.0, 260),
    _a("market-researcher", "research", "Researches markets and competitors on the web",
       "research summarize", "gpt-4o", "web_search http_fetch", 1.0, 6000, 400,
       "knowledge-curator data-analyst", 5.0, 450),
    _a("data-analyst", "research", "Queries warehouses and explains the numbers",
       "analyze query", "gpt-4o", "sql_query python_exec", 1.2, 4000, 500,
       "knowledge-curator", 8.0, 900),
    _a("knowledge-curator", "research", "Indexes findings into the shared knowledge base",
       "summarize index", "gpt-4o-mini", "vector_search", 1.5, 3500, 400, "", 4.0, 700),
    _a("code-architect", "engineering", "Designs changes and reviews pull requests",
       "design review", "claude-sonnet-4", "repo_search git", 0.8, 8000, 450,
       "software-engineer qa-tester", 5.0, 520),
    _a("software-engineer", "engineering", "Implements features and fixes bugs",
       "implement fix", "claude-sonnet-4", "code_exec git repo_search", 1.0, 7000, 500,
       "qa-tester", 9.0, 800),
    _a("qa-tester", "engineering", "Runs test suites and triages failures",
       "test triage", "gpt-4o-mini", "test_runner python_exec", 1.2, 2500, 300,
       "software-engineer", 7.0, 600),
    _a("devops-engineer", "operations", "Deploys services and provisions infrastructure",
       "deploy provision", "gpt-4o", "kubectl terraform", 0.7, 3000, 400,
       "incident-responder", 6.0, 480),
    _a("incident-responder", "operations", "Triages alerts and mitigates incidents",
       "triage mitigate", "gpt-4o", "log_search pager_api kubectl", 0.8, 4000, 350,
       "devops-engineer chief-of-staff", 5.0, 430),
    _a("workflow-scheduler", "operations", "Dispatches recurring jobs across the legion",
       "schedule dispatch", "llama-3.1-70b", "queue_api", 2.0, 800, 80,
       "data-analyst qa-tester compliance-auditor", 3.0, 240),
    _a("sales-assistant", "sales_support", "Qualifies leads and drafts proposals",
       "qualify_lead draft_proposal", "gpt-4o", "crm_lookup email_send", 1.2, 2500, 450,
       "legal-reviewer finance-analyst", 4.0, 350),
    _a("support-agent", "sales_support", "Answers customer tickets",
       "answer_ticket escalate", "gpt-4o-mini", "kb_search ticket_api", 2.5, 2000, 350,
       "customer-success software-engineer", 4.0, 330),
    _a("customer-success", "sales_support", "Onboards customers and checks renewals",
       "onboard renewal_check", "gpt-4o-mini", "crm_lookup email_send", 0.8, 1800, 400,
       "sales-assistant", 3.0, 300),
    _a("finance-analyst", "finance_compliance", "Reconciles ledgers and forecasts budget",
       "reconcile forecast_budget", "gpt-4o", "ledger_api sql_query", 0.8, 3500, 450,
       "compliance-auditor", 6.0, 560),
    _a("compliance-auditor", "finance_compliance", "Audits actions against policy",
       "audit policy_check", "llama-3.1-70b", "policy_db log_search", 1.0, 3000, 200, "",
       4.0, 400),
    _a("legal-reviewer", "finance_compliance", "Reviews contracts and flags risky clauses",
       "contract_review", "claude-sonnet-4", "doc_parse", 0.5, 12000, 400, "compliance-auditor",
       5.0, 500),
)

AGENT_IDS = tuple(a.agent_id for a in AGENTS)
