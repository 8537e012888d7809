"""The manual setup module: for services no module can automate.

Every operation (open, suspend, resume, close, change tariff, renew) becomes a task in the
module's department and waits (``waiting_task``); closing the task with its form completes
the operation and gives the service the status that operation leads to. Tariffs on this
module need no item.
"""

from modules.base import ModuleType, Result


class ManualModule(ModuleType):
    id = "manual"
    name = "Manual setup"
    description = "Every operation becomes a task for the module's department."
    config_fields = []
    operations = frozenset({"open", "suspend", "resume", "close", "change_tariff", "renew"})
    creates_items = False
    people_do_it = True

    def timeout(self):
        return 5.0

    def _to_people(self, ctx):
        ctx.log(f"manual: {ctx.kind} is done by people through a task")
        return Result.task()

    open = suspend = resume = close = change_tariff = renew = _to_people
