"""Errors the services raise. Each carries a message meant for the person who
caused it; views map them to HTTP statuses (see ``http_status``)."""


class PalateError(Exception):
    http_status = 400
    code = "invalid"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(PalateError):
    http_status = 400
    code = "invalid"


class NotPermitted(PalateError):
    http_status = 403
    code = "forbidden"


class NotFound(PalateError):
    http_status = 404
    code = "not_found"


class Conflict(PalateError):
    http_status = 409
    code = "conflict"


class Gone(PalateError):
    """It existed and was removed on purpose (a withdrawn export); not coming back."""

    http_status = 410
    code = "gone"


class StudyNotOpen(NotPermitted):
    code = "study_not_open"


class AnnotatorNotActive(NotPermitted):
    code = "annotator_not_active"


class NotMember(NotPermitted):
    """The annotator has not joined this study (through its own invite or Prolific
    link, with consent), or this browser session was opened for another study."""

    code = "not_a_member"
    default_message = (
        "You have not joined this study. Please open the link you were given for "
        "it (invite or Prolific link) and give your consent first."
    )

    def __init__(self, message: str | None = None):
        super().__init__(message or self.default_message)
