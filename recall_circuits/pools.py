"""Value pools and templates of the bioS-style data (written for this project; see docs/paper.md §1).

Names are built from syllables so that the pools are large, deterministic and free of real people. Cities,
universities, majors and companies are plain lists; a company's city is fixed by the company.
"""

from __future__ import annotations

import itertools
import random

GENERATOR_VERSION = "1"

_FIRST_A = ["Al", "Bel", "Cor", "Dar", "El", "Fen", "Gar", "Hal", "Is", "Jor", "Kel", "Lor", "Mar", "Nor", "Or",
            "Per", "Quin", "Ros", "Sel", "Tam", "Ul", "Val", "Wen", "Yar", "Zel"]
_FIRST_B = ["a", "en", "ia", "on", "is", "ric", "ina", "ton", "ley", "vin", "ette", "ard"]
_MIDDLE_A = ["Ash", "Brook", "Clay", "Dale", "Ever", "Fair", "Glen", "Hart", "Ivy", "June", "Kent", "Lane", "Moss",
             "Nash", "Oak", "Pine", "Reed", "Sage", "Tate", "Wade"]
_MIDDLE_B = ["ley", "ton", "wood", "ford", "well", "by", "more", "er", "ridge", "field", "worth", "lin"]
_LAST_A = ["Ab", "Bran", "Cal", "Dun", "Ester", "Fal", "Grim", "Hol", "Ingle", "Jen", "Kirk", "Lang", "Mel", "Nor",
           "Oster", "Pem", "Quar", "Rad", "Stan", "Thorn", "Ux", "Vos", "Whit", "Yor", "Zan"]
_LAST_B = ["bury", "dale", "field", "gate", "holm", "ington", "kins", "man", "more", "ridge", "son", "stead",
           "stone", "ward", "well", "wick", "worth", "ley"]


def _compose(first: list[str], second: list[str], n: int, seed: int) -> list[str]:
    names = sorted({a + b for a, b in itertools.product(first, second)})
    random.Random(seed).shuffle(names)
    return sorted(names[:n])


FIRST_NAMES = _compose(_FIRST_A, _FIRST_B, 200, 11)
MIDDLE_NAMES = _compose(_MIDDLE_A, _MIDDLE_B, 200, 12)
LAST_NAMES = _compose(_LAST_A, _LAST_B, 400, 13)

CITIES = [
    "Princeton, NJ", "Boston, MA", "Austin, TX", "Denver, CO", "Seattle, WA", "Portland, OR", "Phoenix, AZ",
    "Chicago, IL", "Atlanta, GA", "Miami, FL", "Dallas, TX", "Houston, TX", "Detroit, MI", "Madison, WI",
    "Columbus, OH", "Cleveland, OH", "Nashville, TN", "Memphis, TN", "Louisville, KY", "Raleigh, NC",
    "Charlotte, NC", "Richmond, VA", "Baltimore, MD", "Newark, NJ", "Hartford, CT", "Providence, RI",
    "Burlington, VT", "Portland, ME", "Albany, NY", "Buffalo, NY", "Rochester, NY", "Pittsburgh, PA",
    "Philadelphia, PA", "Wilmington, DE", "Charleston, SC", "Savannah, GA", "Tampa, FL", "Orlando, FL",
    "Birmingham, AL", "Jackson, MS", "Omaha, NE", "Wichita, KS", "Tulsa, OK", "Fresno, CA", "Oakland, CA",
    "Sacramento, CA", "San Diego, CA", "San Jose, CA", "Irvine, CA", "Pasadena, CA", "Reno, NV",
    "Las Vegas, NV", "Boise, ID", "Spokane, WA", "Tacoma, WA", "Eugene, OR", "Salem, OR", "Tucson, AZ",
    "Albuquerque, NM", "Santa Fe, NM", "El Paso, TX", "Lubbock, TX", "Laredo, TX", "Plano, TX",
    "Baton Rouge, LA", "Shreveport, LA", "Little Rock, AR", "Springfield, MO", "Kansas City, MO",
    "St. Louis, MO", "Des Moines, IA", "Cedar Rapids, IA", "Fargo, ND", "Sioux Falls, SD", "Billings, MT",
    "Cheyenne, WY", "Provo, UT", "Ogden, UT", "Anchorage, AK", "Honolulu, HI", "Duluth, MN", "Rochester, MN",
    "Lansing, MI", "Ann Arbor, MI", "Toledo, OH", "Dayton, OH", "Akron, OH", "Erie, PA", "Scranton, PA",
    "Trenton, NJ", "Camden, NJ", "Stamford, CT", "Worcester, MA", "Lowell, MA", "Manchester, NH",
    "Concord, NH", "Bangor, ME", "Knoxville, TN", "Chattanooga, TN", "Lexington, KY",
]

UNIVERSITIES = [
    "Harbor State University", "Northfield College", "Westbrook University", "Eastlake Institute of Technology",
    "Southmoor University", "Clearwater College", "Redstone University", "Silverpine University",
    "Maplewood College", "Ironbridge University", "Lakeshore University", "Stonegate College",
    "Riverbend University", "Cedar Hill University", "Brightwater Institute", "Highland State University",
    "Oakridge University", "Fairview College", "Greenfield University", "Kingsport University",
    "Amberly College", "Bayside University", "Crescent University", "Driftwood College", "Elmhurst Institute",
    "Foxglove University", "Goldcrest College", "Hawthorne University", "Ivory Coast College",
    "Juniper State University", "Kestrel University", "Larkspur College", "Meadowbrook University",
    "Northgate Institute", "Oceanview University", "Pinecrest College", "Quarry Hill University",
    "Rosewood College", "Summit State University", "Timberline University", "Union Valley College",
    "Vista Ridge University", "Willowdale College", "Yellowstone Institute", "Zenith University",
    "Alder Park University", "Birchwood College", "Copperfield University", "Dunmore Institute",
    "Evergreen State College", "Falcon Ridge University", "Granite Falls College", "Hollow Creek University",
    "Indigo Bay College", "Jasper Institute", "Kingsley University", "Lowland State University",
    "Marble Arch College", "Newport Institute of Science", "Old Mill University", "Prairie View College",
    "Queensbury University", "Ravenwood College", "Sandstone University", "Thistle Institute",
    "Upland University", "Valemont College", "Westfield Institute", "Yarrow University", "Ashford University",
    "Blue Mesa College", "Cobalt Institute", "Deer Park University", "Eagle Rock College",
    "Fernhill University", "Glacier Point Institute", "Heron Bay University", "Iron Range College",
    "Jade Valley University", "Kinross Institute", "Lantern Hill College", "Mistral University",
    "North Star College", "Orchard Institute", "Pebble Beach University", "Quill College",
    "Red Maple University", "Sierra Vista Institute", "Tidewater University", "Umber College",
    "Violet Ridge University", "Windmere Institute", "Yorkshire College", "Zephyr University",
    "Aurora State University", "Beacon Institute", "Canyon College", "Delta State Institute",
    "Emerald Coast University", "Frontier College",
]

MAJORS = [
    "Computer Science", "Mathematics", "Physics", "Chemistry", "Biology", "Economics", "History", "Philosophy",
    "Psychology", "Sociology", "Political Science", "Linguistics", "English Literature", "Art History",
    "Music", "Architecture", "Civil Engineering", "Mechanical Engineering", "Electrical Engineering",
    "Chemical Engineering", "Aerospace Engineering", "Materials Science", "Statistics", "Astronomy",
    "Geology", "Oceanography", "Environmental Science", "Neuroscience", "Biochemistry", "Nursing",
    "Public Health", "Pharmacy", "Accounting", "Finance", "Marketing", "Business Administration",
    "Anthropology", "Archaeology", "Journalism", "Communications", "Education", "Theatre", "Film Studies",
    "Graphic Design", "Industrial Design", "Urban Planning", "Agriculture", "Forestry", "Nutrition",
    "Kinesiology", "Criminology", "Social Work", "International Relations", "Religious Studies",
    "Classics", "Data Science", "Robotics", "Genetics", "Zoology", "Botany",
]

_COMPANY_A = ["Northwind", "Bluepeak", "Ironclad", "Silverline", "Brightpath", "Cobalt", "Evermore", "Falconer",
              "Granite", "Harborview", "Keystone", "Lumen", "Meridian", "Nimbus", "Orion", "Pinnacle", "Quantum",
              "Redwood", "Sterling", "Tristar", "Vanguard", "Westgate", "Zenith", "Apex", "Beacon"]
_COMPANY_B = ["Systems", "Industries", "Labs", "Holdings"]
COMPANIES = [f"{a} {b}" for a, b in itertools.product(_COMPANY_A, _COMPANY_B)]
_rng = random.Random(14)
COMPANY_CITY = {c: _rng.choice(CITIES) for c in COMPANIES}

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "company", "company_city")

# BIO templates: "{S}" is the subject (full name or pronoun), "{P}" its possessive, "[...]" marks the relation
# words, "{V}" the value, which always comes after the relation so the position before it predicts it.
BIO_TEMPLATES: dict[str, list[str]] = {
    "birth_date": [
        "{S} [was born on] {V}.", "{S} [came into the world on] {V}.", "{P} [birthday is] {V}.",
        "{S} [celebrates a birthday on] {V}.", "{S} [was born on the day of] {V}.", "{P} [date of birth is] {V}.",
        "{S} [entered life on] {V}.", "{P} [life began on] {V}.", "{S} [has a birth date of] {V}.",
        "{S} [first saw the light of day on] {V}.",
    ],
    "birth_city": [
        "{S} [was born in] {V}.", "{S} [spent early years in] {V}.", "{P} [birthplace is] {V}.",
        "{S} [came into the world in] {V}.", "{P} [hometown is] {V}.", "{S} [was raised in] {V}.",
        "{S} [grew up in] {V}.", "{P} [life began in] {V}.", "{S} [has roots in] {V}.",
        "{P} [place of birth is] {V}.",
    ],
    "university": [
        "{S} [studied at] {V}.", "{S} [graduated from] {V}.", "{S} [received an education at] {V}.",
        "{S} [attended] {V}.", "{P} [alma mater is] {V}.", "{S} [earned a degree from] {V}.",
        "{S} [completed a degree at] {V}.", "{S} [was a student at] {V}.", "{S} [enrolled at] {V}.",
        "{P} [university was] {V}.",
    ],
    "major": [
        "{S} [majored in] {V}.", "{S} [focused on the study of] {V}.", "{P} [field of study was] {V}.",
        "{S} [specialized in] {V}.", "{P} [major was] {V}.", "{S} [earned a degree in] {V}.",
        "{S} [pursued studies in] {V}.", "{S} [concentrated on] {V}.", "{P} [academic focus was] {V}.",
        "{S} [completed coursework in] {V}.",
    ],
    "company": [
        "{S} [works for] {V}.", "{S} [is employed by] {V}.", "{P} [employer is] {V}.", "{S} [has a job at] {V}.",
        "{S} [joined the staff of] {V}.", "{S} [builds a career at] {V}.", "{S} [is on the payroll of] {V}.",
        "{P} [company is] {V}.", "{S} [was hired by] {V}.", "{S} [took a position at] {V}.",
    ],
    "company_city": [
        "{S} [works in] {V}.", "{S} [is based in] {V}.", "{P} [workplace is in] {V}.", "{S} [commutes to] {V}.",
        "{P} [office is located in] {V}.", "{S} [has an office in] {V}.", "{S} [reports to work in] {V}.",
        "{P} [job is in] {V}.", "{S} [spends work days in] {V}.", "{P} [place of work is] {V}.",
    ],
}

# QA questions (Physics of LM 3.1 wording); "[...]" marks the relation words, "{N}" the full name.
QA_TEMPLATES: dict[str, str] = {
    "birth_date": "What is the [birth date] of {N}?",
    "birth_city": "What is the [birth city] of {N}?",
    "university": "Which [university] did {N} [study]?",
    "major": "What [major] did {N} [study]?",
    "company": "Which [company] did {N} [work for]?",
    "company_city": "[Where] did {N} [work]?",
}
QA_ANSWER_PREFIX = "\nAnswer: "

PRONOUNS = {"male": ("He", "His"), "female": ("She", "Her")}
